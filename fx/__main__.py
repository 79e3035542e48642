from fx.cli.main import run

run()

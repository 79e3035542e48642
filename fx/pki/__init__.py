"""The federation's PKI: a root CA, a signing CA, and the certificates they issue.

Each module has one job; callers import from the module they need:

    keys          KeyType, key generation and loading
    pem           Pem (a PEM value object) and certificate parsing
    files         atomic writes; private keys are created 0600
    names         identity names, X.509 subjects, aggregator host SANs
    roles         Role (aggregator / collaborator) and what a certificate is
    fingerprints  SHA-256 fingerprints, full and short (to read aloud)
    builder       the one certificate builder CA and leaf certificates share
    issue         the leaf profile: a role's extensions and validity
    ca            CertificateAuthority: create a root, a signing CA, issue leaves
    csr           certificate signing requests: create, read and check
    bundle        signed bundle (leaf + chain): write, read, verify
    crl           the revocation list: build it, and RevocationList to enforce it
    identity      the identities and serial a peer certificate carries
    inspect       CertificateInfo and validity status for show / list
    store         where the CA keeps its keys and the certificates it issued
    workspace     certify_workspace and the credentials the processes load
    exchange      the multi-party flow on a workspace: csr, sign, import
    lifecycle     revoke and renew
    inventory     every certificate in a workspace, found by name, serial or path
"""

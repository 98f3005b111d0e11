"""Trust: Ed25519 keys, COSE_Sign1, the signed hash-chained batch format and its verifier.

- ``keys``: key files (load / generate 0600 / public PEM) and the key id (kid)
- ``cose``: COSE_Sign1 sign / verify (RFC 9052, EdDSA)
- ``batch``: batch payload encode / decode, ``BatchSigner``, ``ChainHead``, ``SignedBatch``
- ``verify``: ``ChainVerifier``, the consumer-side checker behind ``edge-agent verify``

The byte-level format is documented in docs/wire-format.md.
"""

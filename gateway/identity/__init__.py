"""Who is calling: roles and permissions, tokens, OpenID Connect, the signing
keyring, the vault of center secrets, the audit log."""

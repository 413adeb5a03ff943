"""How the gateway reaches a center: the SSH pool (pinned host keys), keys, the
OpenSSH bulk path, SFTP, and the framing of remote output."""

"""How the gateway reaches a center: the SSH pool and its connections (`ssh`; opening
a transport, `connect`; channels, commands and SFTP sessions, `channels`), the
host-key policy (`hostkeys`), keys, the OpenSSH bulk path (`openssh`, `openssh_setup`),
SFTP file access (`sftp`), and the framing of remote output (`framing`)."""

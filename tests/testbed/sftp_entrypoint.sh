#!/bin/sh
# The off-site tests' sftp server: key auth only, for root, repository under /srv.
set -e
mkdir -p /run/sshd /root/.ssh /srv/restic
chmod 700 /root/.ssh
cp /keys/authorized_keys /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o PermitRootLogin=prohibit-password

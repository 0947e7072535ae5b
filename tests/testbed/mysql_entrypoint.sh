#!/bin/sh
# MySQL stand-in entrypoint: MariaDB honouring the official mysql image's variables
# (MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD). An empty datadir is
# initialised; then mariadbd runs as PID 1 (it handles SIGTERM itself).
set -eu
datadir=/var/lib/mysql
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
if [ "${1:-}" = mariadbd ] && [ ! -d "$datadir/mysql" ]; then
    : "${MYSQL_ROOT_PASSWORD:?set MYSQL_ROOT_PASSWORD (like the official mysql image)}"
    chown -R mysql:mysql "$datadir"
    mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    sqlq() { printf '%s' "$1" | sed "s/'/''/g"; }  # SQL string literal body
    init=/run/mysqld/init.sql
    umask 077
    {
        # --init-file: one statement per line.
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(sqlq "$MYSQL_ROOT_PASSWORD")';"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY '$(sqlq "$MYSQL_ROOT_PASSWORD")';"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            echo "CREATE USER '$(sqlq "$MYSQL_USER")'@'%' IDENTIFIED BY '$(sqlq "$MYSQL_PASSWORD")';"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$(sqlq "$MYSQL_USER")'@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } > "$init"
    chown mysql:mysql "$init"
    set -- "$@" --init-file="$init"
fi
if [ "${1:-}" = mariadbd ]; then
    shift
    exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 \
        --skip-name-resolve "$@"
fi
exec "$@"

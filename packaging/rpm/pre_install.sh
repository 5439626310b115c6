# relstat %pre: the system user (before the files, which it owns).
getent group relstat >/dev/null || groupadd -r relstat
getent passwd relstat >/dev/null || \
    useradd -r -g relstat -d /var/lib/relstat -s /sbin/nologin -c "relstat agent" relstat
exit 0

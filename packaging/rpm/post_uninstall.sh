# relstat %postun: RPM has no purge; as Fedora's guidelines ask, the user and
# /var/lib/relstat (the store and any undelivered SIEM events) stay.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0

# relstat %post: the data directory; the unit is enabled by the admin
# (systemctl enable --now relstat), as Fedora's presets expect.
install -d -o relstat -g relstat -m 0750 /var/lib/relstat
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # upgrade ($1 = 2): restart a running agent
    [ "$1" -ge 2 ] && systemctl try-restart relstat.service >/dev/null 2>&1 || :
fi
exit 0

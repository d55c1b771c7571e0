# Sourced (not run) by the scenarios that check the same behaviour on both transports:
# VDM_TRANSPORT=abuse (the default: abuse.ko) or ublk (the kernel's ublk driver). Sets
#   T     the --transport value      DEV   the block device's name (abuse0, ublkb0)
#   CTL   the control device a first attach names ("" for ublk: vdmount picks one)
#   RCTL  the control device a --reattach names    LOG   the background server's log file
# and defines transport_load / transport_unload and wait_dev SERVER_PID (the device is there
# and has its size).
T=${VDM_TRANSPORT:-abuse}
case "$T" in
abuse) DEV=abuse0 CTL=/dev/abctl0 RCTL=/dev/abctl0 ;;
ublk) DEV=ublkb0 CTL= RCTL=/dev/ublkc0 ;;
*) echo "VDM_TRANSPORT=$T: abuse or ublk"; exit 1 ;;
esac
LOG=/run/vdmount/$DEV.log
transport_load() {
	if [ "$T" = abuse ]; then
		insmod /abuse.ko max_part=15
	elif [ ! -c /dev/ublk-control ]; then
		while read -r m; do insmod "/mods/extra/$m"; done </mods/extra/order
	fi
}
# ublk_drv stays loaded: ublk.sh goes on with it.
transport_unload() { if [ "$T" = abuse ]; then rmmod abuse; fi; }
wait_dev() {
	_i=0
	while [ ! -b /dev/$DEV ] || [ "$(cat /sys/block/$DEV/size 2>/dev/null)" = 0 ]; do
		_i=$((_i + 1)); [ $_i -le 300 ] || fail "no /dev/$DEV after 30 s"
		kill -0 "$1" 2>/dev/null || fail "the server exited early"
		sleep 0.1
	done
}

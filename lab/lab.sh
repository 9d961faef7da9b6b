#!/usr/bin/env bash
# The TMR lab: five hosts (tmr-a, tmr-b, backend-1..3), a client (client-1) and the vendor's host
# (vendor-1) as rootful podman containers booting systemd on one podman network. Every step is idempotent.
#
#   lab/lab.sh up          image (cached) + network + hosts, waits until systemd runs
#   lab/lab.sh down        remove the hosts and the network (keeps the image)
#   lab/lab.sh status      hosts, addresses, which one holds the VIP
#   lab/lab.sh image | network | hosts | wait    single steps
#   lab/lab.sh inventory   print the addresses as shell assignments (for scripts)
#   lab/lab.sh ssh HOST [CMD]  shell on a lab host (as Ansible reaches it)
# Settings: lab/lab.env (LAB_NAME, LAB_PREFIX, LAB_SUBNET, ...), all overridable by environment.
LAB_SCRIPT=lab
# shellcheck source=lab/lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

# NET_ADMIN, NET_RAW, NET_BROADCAST for keepalived (VIP, VRRP); SYS_ADMIN so that systemd really
# applies the units' sandboxing (ProtectSystem=strict, PrivateTmp, ...): without it systemd silently
# skips the namespaces in a container and the lab would not test the hardening.
CAPS="NET_ADMIN,NET_RAW,NET_BROADCAST,SYS_ADMIN"

do_image() { "$LAB_DIR/build-image.sh"; }

do_network() {
  step "network $LAB_NAME ($LAB_SUBNET)"
  require_root; require_cmd podman
  local gw; gw="$(subnet_base).1"
  if podman network exists "$LAB_NAME"; then
    local have; have="$(podman network inspect --format '{{range .Subnets}}{{.Subnet}} {{end}}' "$LAB_NAME")"
    case " $have " in
      *" $LAB_SUBNET "*) info "network $LAB_NAME exists with subnet $LAB_SUBNET" ;;
      *) die "network $LAB_NAME exists with subnet '$have', not $LAB_SUBNET" \
             "run 'lab/lab.sh down' first, or set LAB_NAME to another network name" ;;
    esac
  else
    podman network create --subnet "$LAB_SUBNET" --gateway "$gw" --label "tmr-lab=$LAB_NAME" "$LAB_NAME" >/dev/null \
      || die "podman network create failed" "is $LAB_SUBNET already used by another network? (podman network ls; ip route) -> set LAB_SUBNET"
    info "created network $LAB_NAME"
  fi
}

do_sshkey() {
  step "lab SSH key ($LAB_BUILD/ssh/id_ed25519)"
  if [ ! -f "$LAB_BUILD/ssh/id_ed25519" ]; then
    mkdir -p "$LAB_BUILD/ssh"; chmod 700 "$LAB_BUILD/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "tmr-lab" -f "$LAB_BUILD/ssh/id_ed25519" || die "ssh-keygen failed" "is openssh-client installed?"
    info "created"
  else
    info "present"
  fi
}

do_hosts() {
  require_root; require_cmd podman ssh-keygen
  do_sshkey
  local img; img="$(image_ref)"
  step "image $img"
  podman image exists "$img" || die "image $img not built" "run: lab/lab.sh image (or make lab-image)"
  info "present"
  local h c ip state
  for h in $(lab_hostnames); do
    c="$(container_name "$h")"; ip="$(host_ip "$h")"
    step "host $h ($c, $ip)"
    if podman container exists "$c"; then
      state="$(podman inspect --format '{{.State.Status}}' "$c")"
      local cimg; cimg="$(podman inspect --format '{{.ImageName}}' "$c")"
      [ "$cimg" = "$img" ] || info "note: $c runs image $cimg, not the current $img ('lab/lab.sh down' to recreate)"
      if [ "$state" != running ]; then
        podman start "$c" >/dev/null || die "podman start $c failed" "see: podman logs $c"
        info "started existing container"
      else
        info "running"
      fi
      continue
    fi
    # a fixed MAC per address, like a real host keeps across reboots: a host restarted with a
    # new random MAC stays unreachable until its peers' ARP entries expire (30 s and more)
    podman run -d --name "$c" --hostname "$h" --network "$LAB_NAME" --ip "$ip" --mac-address "$(host_mac "$ip")" \
      --cap-add "$CAPS" --systemd always --label "tmr-lab=$LAB_NAME" \
      -v "$LAB_BUILD/ssh/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
      "$img" /sbin/init >/dev/null \
      || die "podman run $c failed" "check CONTAINERS_CONF=$CONTAINERS_CONF (runtime runc, ulimits) and 'podman info'"
    info "created"
  done
}

do_wait() {
  local h c st deadline
  for h in $(lab_hostnames); do
    c="$(container_name "$h")"
    step "wait for systemd in $c"
    deadline=$((SECONDS + ${LAB_BOOT_TIMEOUT:-90}))
    while :; do
      st="$(podman exec "$c" systemctl is-system-running 2>/dev/null || true)"
      case "$st" in
        running) break ;;
        degraded)
          info "degraded; failed units: $(podman exec "$c" systemctl list-units --failed --plain --no-legend | awk '{print $1}' | paste -sd' ')"
          break ;;
      esac
      [ "$SECONDS" -lt "$deadline" ] || die "systemd in $c not up after ${LAB_BOOT_TIMEOUT:-90}s (state: ${st:-none})" \
        "inspect with: podman logs $c; podman exec -it $c systemctl --failed"
      sleep 0.5
    done
    # Ansible comes in over SSH: wait for sshd on the lab address
    deadline=$((SECONDS + 30))
    until ssh_lab "$h" true 2>/dev/null; do
      [ "$SECONDS" -lt "$deadline" ] || die "no SSH to $h ($(host_ip "$h")) after 30s" \
        "check: podman exec $c systemctl status ssh; ip route get $(host_ip "$h")"
      sleep 0.5
    done
    info "$st, ssh ok"
  done
}

ssh_lab() {  # ssh_lab HOST CMD...: run a command on a lab host as root over the lab network
  local h="$1"; shift
  ssh -i "$LAB_BUILD/ssh/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o LogLevel=ERROR -o ConnectTimeout=3 "root@$(host_ip "$h")" "$@"
}

do_down() {
  require_root; require_cmd podman
  local h c
  for h in $(lab_hostnames); do
    c="$(container_name "$h")"
    step "remove host $c"
    if podman container exists "$c"; then
      podman rm -f -t 5 "$c" >/dev/null || die "podman rm $c failed" "try: podman rm -f $c"
      info "removed"
    else
      info "absent"
    fi
  done
  step "forget the lab's demo ISV and issued licenses ($REPO_DIR/build/$LAB_NAME)"
  # the vendor's ledger (on vendor-1) only goes up (TMR IDs are never re-issued); new hosts, new
  # vendor key, new chain: its public key, the demo ticket and the delivered sets go with it
  rm -rf "$REPO_DIR/build/$LAB_NAME/vendor" "$REPO_DIR/build/$LAB_NAME/licenses" \
    "$REPO_DIR/build/$LAB_NAME/vendor-pub" "$REPO_DIR/build/$LAB_NAME/demo-ticket"
  info "done"
  step "remove network $LAB_NAME"
  if podman network exists "$LAB_NAME"; then
    podman network rm "$LAB_NAME" >/dev/null || die "podman network rm $LAB_NAME failed" \
      "containers still attached? podman ps -a --filter network=$LAB_NAME"
    info "removed"
  else
    info "absent"
  fi
}

do_status() {
  require_cmd podman
  local h c ip st vip; vip="$(lab_vip)"
  printf '%-12s %-26s %-15s %-10s %s\n' HOST CONTAINER ADDRESS STATE VIP
  for h in $(lab_hostnames); do
    c="$(container_name "$h")"; ip="$(host_ip "$h")"
    st="$(podman inspect --format '{{.State.Status}}' "$c" 2>/dev/null || echo absent)"
    local has=""
    if [ "$st" = running ] && podman exec "$c" ip -4 -o addr show 2>/dev/null | grep -q " $vip/"; then has="holds $vip"; fi
    printf '%-12s %-26s %-15s %-10s %s\n' "$h" "$c" "$ip" "$st" "$has"
  done
}

do_inventory() {
  local h
  echo "LAB_NAME=$LAB_NAME"; echo "LAB_SUBNET=$LAB_SUBNET"; echo "LAB_VIP=$(lab_vip)"
  for h in $(lab_hostnames); do echo "LAB_HOST_$(echo "$h" | tr 'a-z-' 'A-Z_')=$(container_name "$h"):$(host_ip "$h")"; done
}

cmd="${1:-up}"
case "$cmd" in
  up) do_image; do_network; do_hosts; do_wait ;;
  image) do_image ;;
  network) do_network ;;
  hosts) do_network; do_hosts; do_wait ;;
  wait) do_wait ;;
  down) do_down ;;
  status) do_status ;;
  inventory) do_inventory ;;
  ssh) shift; ssh_lab "$@" ;;
  *) echo "usage: $0 up|down|status|image|network|hosts|wait|inventory|ssh HOST [CMD]" >&2; exit 2 ;;
esac

#!/bin/sh
# shellcheck shell=sh
#
# /init of the labvirt "tiny" rehearsal image (busybox ash, runs as PID 1).
#
# Boot: mount the kernel file systems, load the modules listed in /lib/modules/load-order,
# find the NoCloud seed (an ISO 9660 volume labelled "cidata" on /dev/sr* or /dev/vd*),
# apply it (hostname, users + authorized keys, ssh host keys, network-config v2), make and
# mount a file system on the root disk (first virtio disk that is not the seed) at /persist,
# start dropbear on port 22 and print "labvirt-tiny: ready <hostname>" on the console.
#
# The seed's YAML is read by a small awk parser (yaml_flatten) that understands the block
# style labvirt/seed.py writes. The parse/apply functions can be run on any host with busybox:
#   tiny-init.sh --flatten FILE                  path<TAB>value lines (value escaped: \\ \n \t)
#   tiny-init.sh --apply-test SEEDDIR ROOT SYSNET   apply the seed into ROOT, network dry-run
#       (SYSNET is a directory laid out like /sys/class/net: SYSNET/<ifname>/address)

ROOT=""              # prefix for every file written while applying the seed
SYSNET=/sys/class/net
DRYRUN=0             # 1: print network/system commands instead of running them
SEED=/run/seed
FLAT=/run/labvirt
PERSIST=/persist

log() {
    echo "labvirt-tiny: $*"
}

# ---------------------------------------------------------------------------------------
# YAML subset parser
#
# Prints one line per scalar: <path><TAB><value>. Paths join mapping keys and sequence
# indexes with ".", e.g. users.0.ssh_authorized_keys.1. In both key and value, "\" is
# written as "\\", a newline as "\n" and a tab as "\t". Empty collections ([] / {}) and
# null are skipped; booleans and numbers are printed as written.
yaml_flatten() {
    awk '
function esc(s) {
    gsub(/\\/, "\\\\", s)
    gsub(/\t/, "\\t", s)
    gsub(/\n/, "\\n", s)
    return s
}
function join(a, b) {
    if (a == "") return b
    return a "." b
}
function utf8(cp) {
    if (cp < 128) return sprintf("%c", cp)
    if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
    if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
    return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
}
function hexval(h,   i, c, v) {
    v = 0
    h = tolower(h)
    for (i = 1; i <= length(h); i++) {
        c = index("0123456789abcdef", substr(h, i, 1))
        if (c == 0) return -1
        v = v * 16 + c - 1
    }
    return v
}
# Scan a quoted scalar starting at s[1] (a quote). Sets QVAL (decoded) and QREST (the text
# after the closing quote). Returns 0 when the closing quote is missing.
function scan_quoted(s,   q, i, n, c, out, e, k) {
    q = substr(s, 1, 1)
    n = length(s)
    out = ""
    i = 2
    while (i <= n) {
        c = substr(s, i, 1)
        if (q == SQ) {
            if (c == SQ) {
                if (substr(s, i + 1, 1) == SQ) { out = out SQ; i += 2; continue }
                QVAL = out; QREST = substr(s, i + 1); return 1
            }
            out = out c; i++; continue
        }
        if (c == "\"") { QVAL = out; QREST = substr(s, i + 1); return 1 }
        if (c != "\\") { out = out c; i++; continue }
        e = substr(s, i + 1, 1)
        i += 2
        if (e == "x") k = 2
        else if (e == "u") k = 4
        else if (e == "U") k = 8
        else k = 0
        if (k > 0) { out = out utf8(hexval(substr(s, i, k))); i += k; continue }
        if (e == "0") out = out sprintf("%c", 0)
        else if (e == "a") out = out sprintf("%c", 7)
        else if (e == "b") out = out sprintf("%c", 8)
        else if (e == "t") out = out "\t"
        else if (e == "n") out = out "\n"
        else if (e == "v") out = out sprintf("%c", 11)
        else if (e == "f") out = out sprintf("%c", 12)
        else if (e == "r") out = out sprintf("%c", 13)
        else if (e == "e") out = out sprintf("%c", 27)
        else if (e == "N") out = out utf8(133)
        else if (e == "_") out = out utf8(160)
        else if (e == "L") out = out utf8(8232)
        else if (e == "P") out = out utf8(8233)
        else out = out e
    }
    return 0
}
# Split "key: value" / "key:" into KEY and VAL (raw value text). Returns 0 when c is not a
# mapping entry (then it is a scalar).
function split_key(c,   p) {
    if (substr(c, 1, 1) == SQ || substr(c, 1, 1) == "\"") {
        if (!scan_quoted(c)) return 0
        if (QREST == ":") { KEY = QVAL; VAL = ""; return 1 }
        if (substr(QREST, 1, 2) == ": ") { KEY = QVAL; VAL = substr(QREST, 3); return 1 }
        return 0
    }
    p = index(c, ": ")
    if (p > 0) { KEY = substr(c, 1, p - 1); VAL = substr(c, p + 2); return 1 }
    if (substr(c, length(c), 1) == ":") { KEY = substr(c, 1, length(c) - 1); VAL = ""; return 1 }
    return 0
}
# Emit path = scalar text v (raw), or start a literal block.
function scalar(path, v) {
    sub(/^ +/, "", v)
    sub(/ +$/, "", v)
    if (v == "" || v == "[]" || v == "{}" || v == "~" || v == "null") return
    if (v ~ /^\|[-+]?$/) {
        BS = 1; BSPATH = path; BSCHOMP = substr(v, 2, 1); BSIND = -1; BSN = 0
        return
    }
    if (substr(v, 1, 1) == SQ || substr(v, 1, 1) == "\"") {
        if (scan_quoted(v)) v = QVAL
    }
    print esc(path) "\t" esc(v)
}
function end_block(   i, text) {
    text = ""
    for (i = 1; i <= BSN; i++) text = text BSL[i] "\n"
    if (BSCHOMP != "+") sub(/\n+$/, "", text)
    if (BSCHOMP == "" && text != "") text = text "\n"
    print esc(BSPATH) "\t" esc(text)
    BS = 0
}
function line(ind, c,   p) {
    while (substr(c, 1, 2) == "- " || c == "-") {
        while (D > 0 && SIND[D] > ind) D--
        if (SKIND[D] == "s" && SIND[D] == ind) {
            SCOUNT[D]++
        } else {
            p = join(SPATH[D], SKEY[D])
            D++; SIND[D] = ind; SKIND[D] = "s"; SPATH[D] = p; SCOUNT[D] = 0
        }
        SKEY[D] = SCOUNT[D]
        c = substr(c, 3)
        ind += 2
        if (c == "") return
    }
    if (split_key(c)) {
        while (D > 0 && SIND[D] > ind) D--
        if (D > 0 && SKIND[D] == "s" && SIND[D] == ind) D--
        if (!(SKIND[D] == "m" && SIND[D] == ind)) {
            p = join(SPATH[D], SKEY[D])
            D++; SIND[D] = ind; SKIND[D] = "m"; SPATH[D] = p
        }
        SKEY[D] = KEY
        scalar(join(SPATH[D], KEY), VAL)
        return
    }
    # a scalar sequence item
    if (SKIND[D] == "s") scalar(join(SPATH[D], SKEY[D]), c)
}
BEGIN {
    SQ = sprintf("%c", 39)
    D = 0; SIND[0] = 0; SKIND[0] = "m"; SPATH[0] = ""; SKEY[0] = ""
    BS = 0
}
{
    sub(/\r$/, "")
    if (BS) {
        if ($0 ~ /^ *$/) {
            BSN++
            BSL[BSN] = (BSIND > 0 && length($0) > BSIND) ? substr($0, BSIND + 1) : ""
            next
        }
        match($0, /^ */)
        if (BSIND < 0) BSIND = RLENGTH
        if (RLENGTH >= BSIND && BSIND > 0) {
            BSN++
            BSL[BSN] = substr($0, BSIND + 1)
            next
        }
        end_block()
    }
    if ($0 ~ /^ *(#|$)/ || $0 ~ /^(---|\.\.\.)( |$)/) next
    match($0, /^ */)
    line(RLENGTH, substr($0, RLENGTH + 1))
}
END {
    if (BS) end_block()
}
' "$1"
}

# cfg_get FLAT PATH: print the decoded value at PATH (no newline added). Fails if absent.
cfg_get() {
    CFG_WANT="$2" awk '
BEGIN { want = ENVIRON["CFG_WANT"]; found = 0 }
{
    t = index($0, "\t")
    if (substr($0, 1, t - 1) != want) next
    v = substr($0, t + 1)
    out = ""
    while ((i = index(v, "\\")) > 0) {
        out = out substr(v, 1, i - 1)
        e = substr(v, i + 1, 1)
        if (e == "n") out = out "\n"
        else if (e == "t") out = out "\t"
        else out = out e
        v = substr(v, i + 2)
    }
    printf "%s", out v
    found = 1
    exit
}
END { exit !found }
' "$1"
}

# cfg_children FLAT PREFIX: the distinct next path components under PREFIX, in order.
cfg_children() {
    CFG_PFX="$2." awk '
BEGIN { pfx = ENVIRON["CFG_PFX"]; n = length(pfx) }
{
    t = index($0, "\t")
    p = substr($0, 1, t - 1)
    if (substr(p, 1, n) != pfx) next
    rest = substr(p, n + 1)
    d = index(rest, ".")
    if (d > 0) rest = substr(rest, 1, d - 1)
    if (!(rest in seen)) { seen[rest] = 1; print rest }
}
' "$1"
}

# is_true VALUE: YAML 1.1 truthiness of a boolean scalar.
is_true() {
    case "$1" in
        true | True | TRUE | yes | Yes | YES | on | On | ON) return 0 ;;
    esac
    return 1
}

run() {
    if [ "$DRYRUN" = 1 ]; then
        echo "run: $*"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------------------------------
# Applying the seed. $1 is the directory holding meta-data, user-data, network-config;
# the flattened files go to $FLAT.

flatten_seed() {
    mkdir -p "$FLAT"
    for f in meta-data user-data network-config; do
        if [ -f "$1/$f" ]; then
            yaml_flatten "$1/$f" >"$FLAT/$f"
        else
            : >"$FLAT/$f"
        fi
    done
}

seed_hostname() {
    cfg_get "$FLAT/meta-data" local-hostname ||
        cfg_get "$FLAT/user-data" hostname ||
        echo localhost
}

apply_hostname() {
    HOST=$(seed_hostname)
    FQDN=$(cfg_get "$FLAT/user-data" fqdn) || FQDN=$HOST
    mkdir -p "$ROOT/etc"
    printf '%s\n' "$HOST" >"$ROOT/etc/hostname"
    {
        printf '127.0.0.1\tlocalhost\n'
        if [ "$FQDN" != "$HOST" ]; then
            printf '127.0.1.1\t%s %s\n' "$FQDN" "$HOST"
        else
            printf '127.0.1.1\t%s\n' "$HOST"
        fi
        printf '::1\tlocalhost ip6-localhost ip6-loopback\n'
    } >"$ROOT/etc/hosts"
    run hostname "$HOST"
}

valid_user() {
    case "$1" in
        "" | root | *[!a-z0-9_.-]* | [!a-z_]*) return 1 ;;
    esac
    [ "${#1}" -le 32 ]
}

# Users with sudo get uid 0 (the image has no setuid helper, and the lab drives these nodes
# as root); "whoami"/"id -un" still print their own name because each such user comes first
# in the /etc/passwd its sessions see (see /bin/bash below). Users without sudo are ordinary
# users (uid 1000 + index).
apply_users() {
    mkdir -p "$ROOT/etc" "$ROOT/home" "$ROOT/run/labvirt"
    : >"$ROOT/run/labvirt/users"
    : >"$ROOT/run/labvirt/first.tmp"
    : >"$ROOT/run/labvirt/rest.tmp"
    : >"$ROOT/run/labvirt/sudoers"
    i=0
    while :; do
        name=$(cfg_get "$FLAT/user-data" "users.$i.name") || {
            # "- default" (a plain scalar item) or the end of the list
            cfg_get "$FLAT/user-data" "users.$i" >/dev/null || break
            i=$((i + 1))
            continue
        }
        if ! valid_user "$name" || grep -qxF "$name" "$ROOT/run/labvirt/users"; then
            log "skipping invalid or duplicate user name in user-data: users.$i"
            i=$((i + 1))
            continue
        fi
        sudo=$(cfg_get "$FLAT/user-data" "users.$i.sudo") || sudo=""
        shell=$(cfg_get "$FLAT/user-data" "users.$i.shell") || shell=/bin/sh
        case "$shell" in /bin/sh | /bin/bash | /bin/ash) ;; *) shell=/bin/sh ;; esac
        home="/home/$name"
        if [ -n "$sudo" ] && [ "$sudo" != false ] && [ "$sudo" != False ]; then
            uid=0
            gid=0
            echo "$name" >>"$ROOT/run/labvirt/sudoers"
        else
            uid=$((1000 + i))
            gid=$uid
            echo "$name:x:$gid:" >>"$ROOT/etc/group"
        fi
        entry="$name:*:$uid:$gid:$name:$home:$shell"
        if [ "$uid" = 0 ]; then
            echo "$entry" >>"$ROOT/run/labvirt/first.tmp"
        else
            echo "$entry" >>"$ROOT/run/labvirt/rest.tmp"
        fi
        echo "$name" >>"$ROOT/run/labvirt/users"
        mkdir -p "$ROOT$home/.ssh"
        : >"$ROOT$home/.ssh/authorized_keys"
        j=0
        while key=$(cfg_get "$FLAT/user-data" "users.$i.ssh_authorized_keys.$j"); do
            printf '%s\n' "$key" | tr -d '\n\r' >>"$ROOT$home/.ssh/authorized_keys"
            echo >>"$ROOT$home/.ssh/authorized_keys"
            j=$((j + 1))
        done
        chmod 755 "$ROOT$home"
        chmod 700 "$ROOT$home/.ssh"
        chmod 600 "$ROOT$home/.ssh/authorized_keys"
        chown -R "$uid:$gid" "$ROOT$home" 2>/dev/null
        i=$((i + 1))
    done

    # /etc/passwd: sudo users (uid 0) first, then root, then the others. For each sudo user
    # but the first, a copy with that user first, bind-mounted over /etc/passwd in its sessions.
    root_entry="root:*:0:0:root:/root:/bin/sh"
    { cat "$ROOT/run/labvirt/first.tmp"; echo "$root_entry"
      cat "$ROOT/run/labvirt/rest.tmp"; } >"$ROOT/etc/passwd"
    first=1
    while IFS= read -r entry; do
        u=${entry%%:*}
        if [ "$first" = 1 ]; then
            first=0
            continue
        fi
        { echo "$entry"; grep -vx -F "$entry" "$ROOT/etc/passwd"; } >"$ROOT/run/labvirt/passwd.$u"
    done <"$ROOT/run/labvirt/first.tmp"
    # what "sudo" shows: root first
    { echo "$root_entry"; grep -vx -F "$root_entry" "$ROOT/etc/passwd"; } \
        >"$ROOT/run/labvirt/passwd.root"
    rm -f "$ROOT/run/labvirt/first.tmp" "$ROOT/run/labvirt/rest.tmp"
}

apply_host_keys() {
    mkdir -p "$ROOT/etc/dropbear"
    chmod 700 "$ROOT/etc/dropbear"
    DROPBEAR_KEYS=""
    for t in ed25519 ecdsa rsa; do
        src="$ROOT/etc/dropbear/openssh_${t}_host_key"
        dst="$ROOT/etc/dropbear/dropbear_${t}_host_key"
        (umask 077; cfg_get "$FLAT/user-data" "ssh_keys.${t}_private" >"$src") || {
            rm -f "$src"
            continue
        }
        cfg_get "$FLAT/user-data" "ssh_keys.${t}_public" >"$src.pub" && echo >>"$src.pub"
        if command -v dropbearconvert >/dev/null 2>&1; then
            if dropbearconvert openssh dropbear "$src" "$dst" >/dev/null 2>&1; then
                DROPBEAR_KEYS="$DROPBEAR_KEYS $dst"
            else
                log "could not convert the $t host key from user-data ssh_keys"
            fi
        fi
    done
}

# find_iface MAC: the kernel name of the interface with that MAC (lower case compare).
find_iface() {
    want=$(echo "$1" | tr 'A-F' 'a-f')
    for d in "$SYSNET"/*; do
        [ -f "$d/address" ] || continue
        if [ "$(cat "$d/address")" = "$want" ]; then
            echo "${d##*/}"
            return 0
        fi
    done
    return 1
}

write_udhcpc_script() {
    mkdir -p "$ROOT/etc/udhcpc"
    cat >"$ROOT/etc/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc lease script (labvirt-tiny); udhcpc sets interface, ip, mask, router, dns
# shellcheck disable=SC2154
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set dev "$interface" up
        ;;
    bound | renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        # a static gateway from network-config wins over the DHCP router
        if [ -n "$router" ] && [ -z "$(ip -4 route show default)" ]; then
            for r in $router; do
                ip -4 route replace default via "$r" dev "$interface"
                break
            done
        fi
        if [ -n "$dns" ] && [ ! -s /etc/resolv.conf.static ]; then
            : >/etc/resolv.conf
            for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done
        fi
        echo "labvirt-tiny: dhcp $interface $ip/${mask:-24}" >/dev/console
        ;;
esac
exit 0
EOF
    chmod 755 "$ROOT/etc/udhcpc/default.script"
}

apply_network() {
    run ip link set dev lo up
    write_udhcpc_script
    : >"$ROOT/etc/resolv.conf"
    cfg_children "$FLAT/network-config" ethernets >"$FLAT/ethernets"
    if [ ! -s "$FLAT/ethernets" ]; then
        # no network-config: DHCP on the first interface, like cloud-init's fallback
        for d in "$SYSNET"/*; do
            ifc=${d##*/}
            [ "$ifc" = lo ] && continue
            run ip link set dev "$ifc" up
            run udhcpc -i "$ifc" -s /etc/udhcpc/default.script -t 5 -T 1 -b
            break
        done
        return 0
    fi
    # names are read one per line from fd 3 (no word splitting or globbing of seed values)
    while IFS= read -r n <&3; do
        p="ethernets.$n"
        mac=$(cfg_get "$FLAT/network-config" "$p.match.macaddress") || {
            log "network-config: $n has no match.macaddress, skipped"
            continue
        }
        ifc=$(find_iface "$mac") || {
            log "network-config: no interface with MAC $mac for $n"
            continue
        }
        name=$(cfg_get "$FLAT/network-config" "$p.set-name") || name=$ifc
        if [ "$name" != "$ifc" ]; then
            run ip link set dev "$ifc" down
            run ip link set dev "$ifc" name "$name" && ifc=$name
        fi
        run ip link set dev "$ifc" up
        k=0
        while a=$(cfg_get "$FLAT/network-config" "$p.addresses.$k"); do
            run ip addr add "$a" dev "$ifc"
            log "static $ifc $a"
            k=$((k + 1))
        done
        k=0
        while to=$(cfg_get "$FLAT/network-config" "$p.routes.$k.to"); do
            via=$(cfg_get "$FLAT/network-config" "$p.routes.$k.via") || via=""
            case "$to" in default | 0.0.0.0/0) to=default ;; esac
            if [ -n "$via" ]; then
                run ip route replace "$to" via "$via" dev "$ifc"
            else
                run ip route replace "$to" dev "$ifc"
            fi
            k=$((k + 1))
        done
        gw=$(cfg_get "$FLAT/network-config" "$p.gateway4") &&
            run ip route replace default via "$gw" dev "$ifc"
        k=0
        while s=$(cfg_get "$FLAT/network-config" "$p.nameservers.addresses.$k"); do
            echo "nameserver $s" >>"$ROOT/etc/resolv.conf"
            cp "$ROOT/etc/resolv.conf" "$ROOT/etc/resolv.conf.static"
            k=$((k + 1))
        done
        if is_true "$(cfg_get "$FLAT/network-config" "$p.dhcp4")"; then
            run udhcpc -i "$ifc" -s /etc/udhcpc/default.script -t 5 -T 1 -b -x "hostname:$HOST"
        fi
    done 3<"$FLAT/ethernets"
}

apply_seed() {
    flatten_seed "$1"
    apply_hostname
    apply_users
    apply_host_keys
    apply_network
}

# ---------------------------------------------------------------------------------------
# Boot

load_modules() {
    [ -f /lib/modules/load-order ] || return 0
    while read -r m; do
        [ -n "$m" ] || continue
        insmod "/lib/modules/$m.ko" 2>/dev/null || log "insmod $m failed"
    done </lib/modules/load-order
}

# is_cidata DEV: DEV holds an ISO 9660 volume labelled cidata
is_cidata() {
    pvd=$(dd if="$1" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=1 count=5 2>/dev/null)
    [ "$pvd" = CD001 ] || return 1
    label=$(dd if="$1" bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=32 2>/dev/null |
        tr -d ' ')
    [ "$label" = cidata ] || [ "$label" = CIDATA ]
}

find_seed() {
    tries=0
    while [ "$tries" -lt 50 ]; do
        for dev in /dev/sr* /dev/vd* /dev/sd*; do
            [ -b "$dev" ] || continue
            if is_cidata "$dev"; then
                echo "$dev"
                return 0
            fi
        done
        tries=$((tries + 1))
        sleep 0.1
    done
    return 1
}

# setup_persist SEEDDEV: first virtio disk that is not the seed -> ext2 on /persist
setup_persist() {
    mkdir -p "$PERSIST"
    for dev in /dev/vd[a-z]; do
        [ -b "$dev" ] || continue
        [ "$dev" = "$1" ] && continue
        ROOTDISK=$dev
        break
    done
    if [ -z "${ROOTDISK:-}" ]; then
        log "no virtio root disk: /persist stays in RAM"
        return 0
    fi
    magic=$(dd if="$ROOTDISK" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
    if [ "$magic" != 53ef ]; then
        used=$(dd if="$ROOTDISK" bs=4096 count=16 2>/dev/null | tr -d '\000' | wc -c)
        if [ "$used" != 0 ]; then
            log "$ROOTDISK has data but no ext file system: left alone, /persist stays in RAM"
            return 0
        fi
        log "making an ext2 file system on $ROOTDISK"
        mke2fs -F -q -i 65536 -m 0 -L persist "$ROOTDISK" >/dev/null 2>&1 ||
            log "mke2fs $ROOTDISK failed"
    fi
    if mount -t ext4 "$ROOTDISK" "$PERSIST" 2>/dev/null ||
        mount -t ext2 "$ROOTDISK" "$PERSIST" 2>/dev/null; then
        log "mounted $ROOTDISK on $PERSIST"
    else
        log "could not mount $ROOTDISK on $PERSIST"
    fi
}

write_helpers() {
    # /bin/bash: the users' login shell. A sudo user other than the first sees /etc/passwd
    # with itself first (private mount namespace), so whoami/id -un print its name.
    cat >/bin/bash <<'EOF'
#!/bin/sh
if [ -z "${LABVIRT_NS:-}" ] && [ -n "${USER:-}" ] && [ -f "/run/labvirt/passwd.$USER" ] &&
    [ "$(id -u)" = 0 ]; then
    LABVIRT_NS=1
    export LABVIRT_NS
    # shellcheck disable=SC2016 # expanded by the inner shell
    exec unshare -m /bin/sh -c \
        'mount --bind "/run/labvirt/passwd.$USER" /etc/passwd && exec /bin/bash "$@"' sh "$@"
fi
[ $# -eq 0 ] && set -- -l
exec /bin/sh "$@"
EOF
    chmod 755 /bin/bash
    # sudo: sudo users are uid 0 already, so it only parses the options and runs the command.
    cat >/usr/bin/sudo <<'EOF'
#!/bin/sh
# labvirt-tiny sudo shim: "ALL=(ALL) NOPASSWD:ALL" users are uid 0 in this image.
target=""
login=0
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        -u) target=${2:-}; shift 2 ;;
        -g | -p | -C | -h | -U | -r | -t | -T | -D | -R) shift 2 ;;
        -u*) target=${1#-u}; shift ;;
        -i | -s) login=1; shift ;;
        --user=*) target=${1#--user=}; shift ;;
        -[A-Za-z]*) shift ;;
        --*) shift ;;
        *) break ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "sudo: a password is required" >&2
    exit 1
fi
if [ $# -eq 0 ]; then
    [ "$login" = 1 ] && exec /bin/sh -l
    exit 0
fi
case "$target" in
    "" | root | 0 | "#0")
        SUDO_USER=${USER:-root}
        USER=root
        LOGNAME=root
        HOME=/root
        export SUDO_USER USER LOGNAME HOME
        if [ "$(id -un)" != root ] && [ -f /run/labvirt/passwd.root ]; then
            # show root as the user name (uid 0 is shared with the sudo users)
            # shellcheck disable=SC2016 # expanded by the inner shell
            exec unshare -m /bin/sh -c \
                'mount --bind /run/labvirt/passwd.root /etc/passwd && exec "$@"' sh "$@"
        fi
        exec "$@"
        ;;
    *)
        id -u "$target" >/dev/null || exit 1
        # shellcheck disable=SC2016 # expanded by the target user's shell
        exec su -s /bin/sh -c 'exec "$@"' -- "$target" sh "$@"
        ;;
esac
EOF
    chmod 755 /usr/bin/sudo
}

stop_all() {
    log "$1"
    [ -f /run/dropbear.pid ] && kill "$(cat /run/dropbear.pid)" 2>/dev/null
    sync
    umount "$PERSIST" 2>/dev/null
    sync
}

wait_port22() {
    n=0
    while [ "$n" -lt 100 ]; do
        # /proc/net/tcp: local address :0016 in state 0A (LISTEN)
        if grep -q ':0016 00000000:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            return 0
        fi
        n=$((n + 1))
        sleep 0.05
    done
    return 1
}

boot() {
    PATH=/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root
    export PATH HOME
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null
    mkdir -p /dev/pts /run /tmp /var/log /root
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
    chmod 1777 /tmp
    log "booting"
    load_modules
    ip link set dev lo up

    write_helpers
    SEEDDEV=""
    mkdir -p "$SEED"
    if SEEDDEV=$(find_seed) && mount -t iso9660 -o ro "$SEEDDEV" "$SEED"; then
        log "seed found on $SEEDDEV"
    else
        log "no cidata seed found: no users, DHCP on the first interface"
        SEEDDEV=""
    fi
    apply_seed "$SEED"
    setup_persist "$SEEDDEV"

    if [ -z "$DROPBEAR_KEYS" ]; then
        set -- -R
    else
        set --
        for k in $DROPBEAR_KEYS; do set -- "$@" -r "$k"; done
    fi
    dropbear "$@" -p 22 -E -P /run/dropbear.pid -K 60
    acpid -c /etc/acpi -l /var/log/acpid.log 2>/dev/null
    if wait_port22; then
        log "ready $HOST"
    else
        log "dropbear did not start"
    fi

    trap 'stop_all reboot; reboot -f' TERM INT
    trap 'stop_all poweroff; poweroff -f' USR2
    trap 'stop_all halt; halt -f' USR1
    while :; do
        sleep 3600 &
        wait $!
    done
}

case "${1:-}" in
    --flatten)
        yaml_flatten "$2"
        exit $?
        ;;
    --apply-test)
        ROOT=$3
        SYSNET=$4
        FLAT=$3/run/labvirt-flat
        DRYRUN=1
        apply_seed "$2"
        exit $?
        ;;
esac

if [ "$$" != 1 ]; then
    echo "tiny-init: not PID 1; use --flatten FILE or --apply-test SEEDDIR ROOT SYSNET" >&2
    exit 2
fi
boot

#!/bin/bash
# Builds the Textbridge SD-card image. Driven by image/image.mk (`make image`); every input is
# in image/recipe.conf, image/packages.txt, the overlays/ and systemd/ trees, requirements/*.lock
# and the Python package itself. The slow stages are cached under build/image/cache by a hash of
# their inputs; the finished image records the hash of all inputs (build/image/inputs.hash),
# and `make image` with the same inputs does nothing.
#
# Stages:   base        mmdebstrap: Debian trixie arm64 + packages.txt (arm64 maintainer
#                       scripts run under qemu-user-static through binfmt_misc)
#           wheelhouse  aarch64/cp313 wheels from the locks (pip download; pure-Python sdists
#                       become wheels; nothing is compiled for the target)
#           rootfs      copy of base + overlays, units, venvs (/opt/textbridge, /opt/synapse),
#                       the homeserver; pip runs inside the arm64 chroot
#           disk        MBR, FAT firmware + ext4 root + ext4 data, made as files (mkfs -d,
#                       mcopy), so no loop devices are needed
#           publish     .img.xz, .sha256 and a Raspberry Pi Imager repository JSON
#
# Usage: image/build.sh [all|preflight|base|wheelhouse|rootfs|disk|publish|inputs-hash|status|settings DIR]
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
TOP="$(cd "$HERE/.." && pwd)"
# shellcheck source=recipe.conf
. "$HERE/recipe.conf"

OUT="${OUT:-$TOP/build}"
WORK="$OUT/image"
CACHE="$WORK/cache"
LOGS="$OUT/logs"
R="$WORK/rootfs"
VERSION="${VERSION:-$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$TOP/pyproject.toml" | head -n1)}"
# The name says which homeserver the image carries: textbridge-<version>-synapse-arm64.
NAME="textbridge-$VERSION-$HOMESERVER-arm64"
IMG="$OUT/$NAME.img"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s)}"
export LC_ALL=C.UTF-8
mkdir -p "$CACHE" "$LOGS"

say() { printf '\033[1m==> [%s] %s\033[0m\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 1; }

packages() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages.txt" | tr -d ' \t' | sort -u; }
sha() { sha256sum | cut -c1-16; }

# --- hashes of each stage's inputs -----------------------------------------------------------
base_hash() {
  { echo "$SUITE $ARCH $MIRROR $SECURITY_MIRROR $COMPONENTS"; packages; } | sha
}
wheel_hash() {  # $1: runtime|synapse
  { echo "$PY_ABI $WHEEL_PLATFORMS"; cat "$TOP/requirements/$1.lock" "$HERE/lockfilter.py"; } | sha
}
tree_hash() {   # every file that ends up in the root filesystem besides the base
  ( cd "$TOP" && find image systemd overlays appliance pyproject.toml requirements docs/image.md docs/wireguard.md docs/homeserver.md \
      -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum )
}
inputs_hash() {
  { base_hash; wheel_hash runtime; wheel_hash synapse; tree_hash;
    echo "$HOMESERVER $TUWUNEL_VERSION $TUWUNEL_SHA256 $TUWUNEL_DEB $VERSION"; } | sha
}

# --- preconditions ---------------------------------------------------------------------------
need_root() { [ "$(id -u)" -eq 0 ] || die "the image build runs as root (mmdebstrap --mode=root, chroot, mkfs -d ownership)"; }
need_binfmt() {
  # arm64 programs (dpkg maintainer scripts, pip) run under qemu-user-static. In a container
  # binfmt_misc may not be mounted; as root we can mount it and register qemu-aarch64.
  if ! [ -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
      die "binfmt_misc is not available here: arm64 programs cannot run, so the image cannot be built on this machine"
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  arch-test arm64 >/dev/null 2>&1 || die "arm64 binaries do not run here (arch-test arm64 failed): install qemu-user-static and binfmt-support"
}

# --- chroot helpers --------------------------------------------------------------------------
MOUNTED=()
mount_chroot() {
  mount --bind /dev "$R/dev"; MOUNTED+=("$R/dev")
  mount -t proc proc "$R/proc"; MOUNTED+=("$R/proc")
  mount -t sysfs -o ro sysfs "$R/sys"; MOUNTED+=("$R/sys")
  mount -t tmpfs tmpfs "$R/tmp"; MOUNTED+=("$R/tmp")
}
umount_chroot() {
  local i
  for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
  MOUNTED=()
}
trap umount_chroot EXIT
in_chroot() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive "$@"; }

# --- stage: base -----------------------------------------------------------------------------
stage_base() {
  local h; h="$(base_hash)"
  BASE_DIR="$CACHE/base-$h.d"
  if [ -e "$BASE_DIR/.complete" ]; then say "base: cached ($(basename "$BASE_DIR"))"; return; fi
  need_root; need_binfmt
  rm -rf "$BASE_DIR.part"
  say "base: mmdebstrap $SUITE $ARCH with $(packages | wc -l) packages (slow: arm64 under qemu-user)"
  local t0=$SECONDS
  mmdebstrap --mode=root --format=directory --variant=apt --architectures="$ARCH" \
    --include="$(packages | paste -sd, -)" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --essential-hook='mkdir -p "$1/boot/firmware"' \
    "$SUITE" "$BASE_DIR.part" \
    "deb $MIRROR $SUITE $COMPONENTS" \
    "deb $MIRROR $SUITE-updates $COMPONENTS" \
    "deb $SECURITY_MIRROR $SUITE-security $COMPONENTS"
  rm -rf "$BASE_DIR"; mv "$BASE_DIR.part" "$BASE_DIR"; touch "$BASE_DIR/.complete"
  say "base: done in $((SECONDS - t0)) s, $(du -sh "$BASE_DIR" | cut -f1)"
}

# --- stage: wheelhouse -----------------------------------------------------------------------
pip_platform_args() {
  local p; for p in $WHEEL_PLATFORMS; do printf -- '--platform\n%s\n' "$p"; done
  printf -- '--python-version\n%s\n--implementation\ncp\n--abi\n%s\n--abi\nabi3\n--abi\nnone\n' "$PY_VERSION" "$PY_ABI"
}
stage_wheelhouse() {  # $1: runtime|synapse -> sets WHEELS
  local lock="$1" h; h="$(wheel_hash "$lock")"
  WHEELS="$CACHE/wheels-$lock-$h"
  if [ -e "$WHEELS/.complete" ]; then say "wheelhouse $lock: cached"; return; fi
  rm -rf "$WHEELS.part"; mkdir -p "$WHEELS.part"
  say "wheelhouse $lock: downloading aarch64/$PY_ABI wheels from requirements/$lock.lock"
  # systemd-python is an sdist that needs a compiler: the image uses Debian's python3-systemd
  # instead, seen through the venv's --system-site-packages.
  python3 "$HERE/lockfilter.py" "$TOP/requirements/$lock.lock" systemd-python > "$WHEELS.part/requirements.lock"
  local -a plat; mapfile -t plat < <(pip_platform_args)
  # --no-deps: the lock is complete; with it, pip also keeps sdists it cannot match to a wheel.
  python3 -m pip download --disable-pip-version-check --quiet --require-hashes --no-deps \
    --prefer-binary "${plat[@]}" -r "$WHEELS.part/requirements.lock" -d "$WHEELS.part"
  local sd
  for sd in "$WHEELS.part"/*.tar.gz "$WHEELS.part"/*.zip; do
    [ -e "$sd" ] || continue
    # An sdist (verified by its hash above) is only acceptable if it is pure Python.
    say "wheelhouse $lock: building $(basename "$sd") (must be pure Python)"
    python3 -m pip wheel --disable-pip-version-check --quiet --no-deps -w "$WHEELS.part/built" "$sd"
    rm -f "$sd"
  done
  if [ -d "$WHEELS.part/built" ]; then
    if ls "$WHEELS.part/built" | grep -v -- '-none-any\.whl$'; then
      die "wheelhouse $lock: the wheels above are not pure Python and cannot be built for aarch64 here"
    fi
    mv "$WHEELS.part/built"/*.whl "$WHEELS.part/"; rmdir "$WHEELS.part/built"
  fi
  # What to install: name==version of every locked requirement (the files were hash-checked
  # when downloaded; the built ones were built from hash-checked sdists).
  grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$WHEELS.part/requirements.lock" | sed 's/ .*//' > "$WHEELS.part/install.txt"
  rm -rf "$WHEELS"; mv "$WHEELS.part" "$WHEELS"; touch "$WHEELS/.complete"
  say "wheelhouse $lock: $(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
}

app_wheel() {  # the appliance itself, built from a clean copy of the package (-> APP_WHEEL)
  local src="$WORK/appsrc" dst="$WORK/appwheel"
  rm -rf "$src" "$dst"; mkdir -p "$src" "$dst"
  cp -a "$TOP/pyproject.toml" "$src/"
  [ -f "$TOP/README.md" ] && cp -a "$TOP/README.md" "$src/"
  tar -C "$TOP" --exclude=__pycache__ --exclude='*.pyc' -cf - appliance | tar -C "$src" -xf -
  python3 -m pip wheel --disable-pip-version-check --quiet --no-deps -w "$dst" "$src"
  APP_WHEEL="$(ls "$dst"/*.whl)"
}

# --- stage: rootfs ---------------------------------------------------------------------------
# --- preflight: everything that can fail in seconds, before mmdebstrap and the slow stages --
TUWUNEL_ASSET="v$TUWUNEL_VERSION-release-all-aarch64-v8-linux-gnu-tuwunel.deb"
tuwunel_help() {
  printf '%s' "download $TUWUNEL_ASSET from Tuwunel's v$TUWUNEL_VERSION release on a machine that can reach it, check its sha256, then run: make image HOMESERVER=tuwunel TUWUNEL_DEB=/path/to/$TUWUNEL_ASSET TUWUNEL_SHA256=<that sha256> (and pin that sha256 in image/recipe.conf). \`make image\` alone builds the Synapse image"
}
tuwunel_deb() {  # a verified Tuwunel package, or one message saying what to do -> TUWUNEL_FILE
  [[ "$TUWUNEL_SHA256" =~ ^[0-9a-f]{64}$ ]] ||
    die "Tuwunel $TUWUNEL_VERSION has no verified checksum (TUWUNEL_SHA256 is ${TUWUNEL_SHA256:-empty}): $(tuwunel_help)"
  local got
  if [ -n "$TUWUNEL_DEB" ]; then
    [ -s "$TUWUNEL_DEB" ] || die "TUWUNEL_DEB=$TUWUNEL_DEB: no such file, or it is empty: $(tuwunel_help)"
    TUWUNEL_FILE="$TUWUNEL_DEB"
  else
    TUWUNEL_FILE="$CACHE/tuwunel-$TUWUNEL_VERSION-$TUWUNEL_SHA256.deb"
    if ! [ -s "$TUWUNEL_FILE" ]; then
      command -v curl >/dev/null || die "curl is needed to download Tuwunel (apt-get install curl), or: $(tuwunel_help)"
      say "tuwunel: downloading $TUWUNEL_URL"
      # Short timeouts: with no way out to the release this must fail in seconds, not hang.
      if ! curl -fsSL --connect-timeout 10 --retry 2 --retry-max-time 20 --max-time 900 \
          -o "$TUWUNEL_FILE.part" "$TUWUNEL_URL" 2>"$TUWUNEL_FILE.err"; then
        got="$(tr '\n' ' ' < "$TUWUNEL_FILE.err")"; rm -f "$TUWUNEL_FILE.part" "$TUWUNEL_FILE.err"
        die "cannot download Tuwunel from $TUWUNEL_URL (${got% }): $(tuwunel_help)"
      fi
      rm -f "$TUWUNEL_FILE.err"
      got="$(sha256sum "$TUWUNEL_FILE.part" | cut -d' ' -f1)"
      if [ "$got" != "$TUWUNEL_SHA256" ]; then
        rm -f "$TUWUNEL_FILE.part"
        die "the Tuwunel package from $TUWUNEL_URL has sha256 $got, not the pinned $TUWUNEL_SHA256; nothing was built: $(tuwunel_help)"
      fi
      mv "$TUWUNEL_FILE.part" "$TUWUNEL_FILE"
    fi
  fi
  got="$(sha256sum "$TUWUNEL_FILE" | cut -d' ' -f1)"
  [ "$got" = "$TUWUNEL_SHA256" ] ||
    die "$TUWUNEL_FILE has sha256 $got, not the pinned $TUWUNEL_SHA256; nothing was built: $(tuwunel_help)"
}
preflight() {
  case "$HOMESERVER" in
    synapse) ;;
    tuwunel) tuwunel_deb ;;
    *) die "HOMESERVER must be synapse (the default) or tuwunel, not $HOMESERVER" ;;
  esac
}

homeserver_version() {  # what the recipe puts in, for image-release and the image test
  case "$HOMESERVER" in
    tuwunel) echo "$TUWUNEL_VERSION" ;;
    synapse) sed -n 's/^matrix-synapse==\([^ ]*\).*/\1/p' "$TOP/requirements/synapse.lock" | head -n1 ;;
  esac
}

write_settings() {
  local port
  case "$HOMESERVER" in
    synapse) port=8008 ;;
    tuwunel) port=6167 ;;
    *) die "HOMESERVER must be tuwunel or synapse, not $HOMESERVER" ;;
  esac
  install -d -m 0755 "$R/etc/textbridge"
  cat > "$R/etc/default/textbridge" <<CONF
# Written by image/build.sh: which homeserver this image runs and how the parts find it.
HOMESERVER=$HOMESERVER
HOMESERVER_PORT=$port
SERVER_NAME=$HOSTNAME_DEFAULT.local
BRIDGE_URL=http://127.0.0.1:29330
# Arguments of \`textbridge web\` (textbridge-web.service).
WEB_ARGS="--homeserver $HOMESERVER --homeserver-url http://127.0.0.1:$port --server-name $HOSTNAME_DEFAULT.local --https-port 443 --detect-addresses"
CONF
  cat > "$R/etc/textbridge/config.toml" <<CONF
# Textbridge appliance configuration (see docs/). Secrets are not kept here: they live in
# /var/lib/textbridge, generated on first boot.
[general]
data_dir = "/var/lib/textbridge"

[bridge]
homeserver_url = "http://127.0.0.1:$port"
server_name = "$HOSTNAME_DEFAULT.local"
registration = "/var/lib/textbridge/registration.yaml"
CONF
  local cfg
  case "$HOMESERVER" in
    synapse) cfg=/var/lib/textbridge/synapse/homeserver.yaml ;;
    tuwunel) cfg=/var/lib/textbridge/tuwunel.toml ;;
  esac
  install -d -m 0755 "$R/etc/systemd/system/textbridge-homeserver.service.d"
  cat > "$R/etc/systemd/system/textbridge-homeserver.service.d/kind.conf" <<CONF
# Written by image/build.sh for HOMESERVER=$HOMESERVER: skipped until the first boot wrote it.
[Unit]
ConditionPathExists=$cfg
CONF
  if [ "$HOMESERVER" = tuwunel ]; then
    # Tuwunel (1.9) pings the sd_notify watchdog at half this interval; Synapse pings none,
    # so only Tuwunel gets one. The bridge's own check of /_matrix/client/versions covers
    # both (appliance/homeserver/watch.py).
    cat >> "$R/etc/systemd/system/textbridge-homeserver.service.d/kind.conf" <<CONF
[Service]
WatchdogSec=2min
CONF
  fi
  cat > "$R/etc/textbridge/image-release" <<CONF
TEXTBRIDGE_VERSION=$VERSION
HOMESERVER=$HOMESERVER
HOMESERVER_VERSION=$(homeserver_version)
INPUTS=$(inputs_hash)
BUILT=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
CONF
}

stage_rootfs() {
  preflight
  need_root; need_binfmt
  stage_base
  stage_wheelhouse runtime; local rt="$WHEELS"
  local syn=""
  if [ "$HOMESERVER" = synapse ]; then stage_wheelhouse synapse; syn="$WHEELS"; fi
  app_wheel
  local t0=$SECONDS
  say "rootfs: copying the base"
  umount_chroot; rm -rf "$R"
  cp -a "$BASE_DIR" "$R"; rm -f "$R/.complete"

  say "rootfs: overlays and units"
  # Files keep their mode from git (scripts are executable); all belong to root.
  cp -r --preserve=mode "$TOP/overlays/." "$R/"
  chown -R root:root "$R/etc" "$R/usr/lib/textbridge"
  local u
  for u in "$TOP"/systemd/*.service "$TOP"/systemd/*.timer "$TOP"/systemd/*.path; do
    install -m 0644 "$u" "$R/etc/systemd/system/"
  done
  for u in "$TOP"/systemd/*.d; do
    install -d -m 0755 "$R/etc/systemd/system/$(basename "$u")"
    install -m 0644 "$u"/*.conf "$R/etc/systemd/system/$(basename "$u")/"
  done
  install -D -m 0644 "$TOP/docs/image.md" "$R/usr/share/doc/textbridge/image.md"
  install -D -m 0644 "$TOP/docs/wireguard.md" "$R/usr/share/doc/textbridge/wireguard.md"
  install -D -m 0644 "$TOP/docs/homeserver.md" "$R/usr/share/doc/textbridge/homeserver.md"
  write_settings

  mount_chroot
  mkdir -p "$R/tmp/wh"
  # The venvs' third-party part is slow to install under emulation and changes only with the
  # base or the lock, so it is cached (as a tar of /opt/NAME) by those hashes.
  local key cached
  key="$(echo "$(base_hash) $(basename "$rt")" | sha)"; cached="$CACHE/venv-textbridge-$key.tar"
  if [ -s "$cached" ]; then
    say "rootfs: /opt/textbridge dependencies: cached"
    tar -C "$R" -xf "$cached"
  else
    say "rootfs: /opt/textbridge venv from the wheelhouse (pip under qemu-user: slow)"
    cp "$rt"/*.whl "$rt/install.txt" "$R/tmp/wh/"
    in_chroot python3 -m venv --system-site-packages /opt/textbridge
    in_chroot /opt/textbridge/bin/pip install --disable-pip-version-check --quiet --no-index \
      --no-cache-dir --find-links /tmp/wh -r /tmp/wh/install.txt
    tar -C "$R" -cf "$cached.part" opt/textbridge && mv "$cached.part" "$cached"
    rm -rf "$R/tmp/wh"/*
  fi
  say "rootfs: the appliance into /opt/textbridge"
  cp "$APP_WHEEL" "$R/tmp/wh/"
  in_chroot /opt/textbridge/bin/pip install --disable-pip-version-check --quiet --no-index \
    --no-cache-dir --no-deps --force-reinstall "/tmp/wh/$(basename "$APP_WHEEL")"
  in_chroot /opt/textbridge/bin/python -c 'import systemd.daemon, appliance, aiohttp, mautrix, serial, gsmmodem, cryptography, argon2; print("textbridge venv imports ok")'
  in_chroot /opt/textbridge/bin/textbridge check-config --config /etc/textbridge/config.toml >/dev/null
  rm -rf "$R/tmp/wh"/*

  if [ "$HOMESERVER" = synapse ]; then
    key="$(echo "$(base_hash) $(basename "$syn")" | sha)"; cached="$CACHE/venv-synapse-$key.tar"
    if [ -s "$cached" ]; then
      say "rootfs: /opt/synapse: cached"
      tar -C "$R" -xf "$cached"
    else
      say "rootfs: /opt/synapse venv from the wheelhouse (pip under qemu-user: slow)"
      cp "$syn"/*.whl "$syn/install.txt" "$R/tmp/wh/"
      in_chroot python3 -m venv /opt/synapse
      in_chroot /opt/synapse/bin/pip install --disable-pip-version-check --quiet --no-index \
        --no-cache-dir --find-links /tmp/wh -r /tmp/wh/install.txt
      tar -C "$R" -cf "$cached.part" opt/synapse && mv "$cached.part" "$cached"
      rm -rf "$R/tmp/wh"/*
    fi
    in_chroot /opt/synapse/bin/python -c 'import synapse; print("synapse", synapse.__version__)'
  fi
  if [ "$HOMESERVER" = tuwunel ]; then
    say "rootfs: Tuwunel $TUWUNEL_VERSION"
    cp "$TUWUNEL_FILE" "$R/tmp/wh/tuwunel.deb"
    cp -L /etc/resolv.conf "$R/tmp/resolv.conf"
    mount --bind "$R/tmp/resolv.conf" "$R/etc/resolv.conf" 2>/dev/null && MOUNTED+=("$R/etc/resolv.conf") || true
    in_chroot apt-get update -qq
    in_chroot apt-get install -y -qq --no-install-recommends /tmp/wh/tuwunel.deb
    in_chroot test -x /usr/sbin/tuwunel || die "the Tuwunel package has no /usr/sbin/tuwunel"
    systemctl --root="$R" disable tuwunel.service >/dev/null 2>&1 || true
    systemctl --root="$R" mask tuwunel.service >/dev/null 2>&1 || true
  fi

  say "rootfs: firmware partition files (raspi-firmware hooks)"
  local kver; kver="$(basename "$(ls -d "$R"/lib/modules/* | sort -V | tail -n1)")"
  in_chroot /etc/initramfs/post-update.d/z50-raspi-firmware "$kver" "/boot/initrd.img-$kver"
  # The image's own systemd-sysusers (this machine's may not know newer sysusers.d syntax).
  in_chroot systemd-sysusers
  umount_chroot

  say "rootfs: users, services, secrets out"
  systemctl --root="$R" set-default multi-user.target >/dev/null
  systemctl --root="$R" enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service avahi-daemon.service nftables.service ssh.service \
    textbridge-firstboot.service textbridge-homeserver.service textbridge.service \
    textbridge-web.service textbridge-journal-save.timer textbridge-journal-save-shutdown.service \
    textbridge-wireguard.service textbridge-wireguard.path \
    textbridge-appservice-firewall.service textbridge-appservice-firewall.path >/dev/null 2>&1
  # systemd-firstboot would ask for a locale, time zone and root password on the console.
  systemctl --root="$R" mask systemd-firstboot.service >/dev/null
  ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$R/etc/localtime"; echo "Etc/UTC" > "$R/etc/timezone"
  echo 'LANG=C.UTF-8' > "$R/etc/locale.conf"; echo 'LANG=C.UTF-8' > "$R/etc/default/locale"
  # No passwords: root is locked, and no other account can log in.
  in_chroot_passwd_lock
  # Per-card identity is made on first boot: machine-id, SSH host keys, random seed.
  : > "$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id" "$R"/etc/ssh/ssh_host_* "$R/var/lib/systemd/random-seed"
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/var/log/*.log "$R"/tmp/* "$R"/root/.cache
  # The data partition is mounted here; its contents ship empty in the image.
  rm -rf "$R/var/lib/textbridge"; install -d -m 0750 "$R/var/lib/textbridge"
  # Firmware partition contents move out of the root filesystem into their own partition.
  rm -rf "$WORK/firmware"; mkdir -p "$WORK/firmware"
  cp -r "$R/boot/firmware/." "$WORK/firmware/"; rm -rf "$R/boot/firmware"/*
  cat > "$WORK/firmware/README.txt" <<TXT
Textbridge $VERSION ($HOMESERVER). Open http://textbridge.local after the first boot.
To turn SSH on (keys only), put an empty file named "ssh" here and your public keys
in a file named "authorized_keys", then boot. Remove "ssh" to turn it off again.
TXT
  echo "$(inputs_hash)" > "$WORK/rootfs.inputs"
  say "rootfs: done in $((SECONDS - t0)) s, $(du -sh "$R" | cut -f1) installed"
}

in_chroot_passwd_lock() {
  # Locked ("!"), with no password behind the lock ("*"). Key logins through PAM still work
  # for root when SSH is turned on; nothing else can log in.
  sed -i 's/^root:[^:]*:/root:!*:/' "$R/etc/shadow"
  ! grep -E '^[^:]+:([^!*:][^:]*)?:' "$R/etc/shadow" || die "an account with a password is in the image"
}

# --- stage: disk -----------------------------------------------------------------------------
stage_disk() {
  need_root
  [ -s "$WORK/rootfs.inputs" ] && [ "$(cat "$WORK/rootfs.inputs")" = "$(inputs_hash)" ] || stage_rootfs
  say "disk: filesystems"
  local t0=$SECONDS d="$WORK/disk"; rm -rf "$d"; mkdir -p "$d"
  local used root_mb
  used="$(du -sm --apparent-size "$R" | cut -f1)"
  root_mb=$(( (used * 115 / 100 + ROOT_SLACK_MB + 3) / 4 * 4 ))
  local uid gid
  uid="$(awk -F: '$1=="textbridge"{print $3}' "$R/etc/passwd")"
  gid="$(awk -F: '$1=="textbridge"{print $4}' "$R/etc/group")"
  local fsopts=(-q -F -t ext4 -m 1 -E "lazy_itable_init=0,lazy_journal_init=0" -U clear)
  export E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH"
  mkfs.ext4 "${fsopts[@]}" -L "$ROOT_LABEL" -i 8192 -d "$R" "$d/root.img" "${root_mb}M"
  # The data filesystem is small in the image but grows with the card: 4 KiB blocks (mke2fs
  # would pick 1 KiB for 64 MiB) and room in the group descriptors to grow to 1 TiB online.
  mkfs.ext4 "${fsopts[@]}" -L "$DATA_LABEL" -T default -b 4096 -E "root_owner=$uid:$gid,resize=268435456" \
    "$d/data.img" "${DATA_MB}M"
  unset E2FSPROGS_FAKE_TIME
  # -U clear then a fixed UUID would be reproducible; random UUIDs are fine (fstab uses labels).
  tune2fs -U random "$d/root.img" >/dev/null; tune2fs -U random "$d/data.img" >/dev/null
  mkfs.vfat -F 32 -n "$FIRMWARE_LABEL" -C "$d/fw.img" $((FIRMWARE_MB * 1024)) >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$d/fw.img" "$WORK/firmware"/* ::/

  say "disk: partition table and assembly"
  local fw_start=4 root_start root_end total
  root_start=$((fw_start + FIRMWARE_MB)); root_end=$((root_start + root_mb)); total=$((root_end + DATA_MB))
  rm -f "$IMG"; truncate -s "${total}M" "$IMG"
  sfdisk --quiet "$IMG" <<PT
label: dos
unit: sectors
start=$((fw_start * 2048)), size=$((FIRMWARE_MB * 2048)), type=c, bootable
start=$((root_start * 2048)), size=$((root_mb * 2048)), type=83
start=$((root_end * 2048)), size=$((DATA_MB * 2048)), type=83
PT
  dd if="$d/fw.img" of="$IMG" bs=1M seek="$fw_start" conv=notrunc,sparse status=none
  dd if="$d/root.img" of="$IMG" bs=1M seek="$root_start" conv=notrunc,sparse status=none
  dd if="$d/data.img" of="$IMG" bs=1M seek="$root_end" conv=notrunc,sparse status=none
  rm -rf "$d"
  # The kernel and initrd, for booting the image under qemu (image/test.sh): the same files
  # as in the root filesystem's /boot.
  local kver; kver="$(basename "$(ls -d "$R"/lib/modules/* | sort -V | tail -n1)")"
  cp "$R/boot/vmlinuz-$kver" "$WORK/vmlinuz"; cp "$R/boot/initrd.img-$kver" "$WORK/initrd.img"
  say "disk: $IMG ($total MiB: firmware $FIRMWARE_MB, root $root_mb, data $DATA_MB) in $((SECONDS - t0)) s"
}

# --- stage: publish --------------------------------------------------------------------------
stage_publish() {
  [ -s "$IMG" ] || stage_disk
  local t0=$SECONDS
  say "publish: xz (progress below)"
  xz -T0 -6 -v -k -f -c "$IMG" > "$IMG.xz.part"; mv "$IMG.xz.part" "$IMG.xz"
  (cd "$OUT" && sha256sum "$NAME.img.xz" > "$NAME.img.xz.sha256")
  python3 "$HERE/imager_json.py" --image "$IMG" --xz "$IMG.xz" --version "$VERSION" \
    --homeserver "$HOMESERVER" --base-url "${IMAGE_BASE_URL:-}" \
    --release-date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" > "$OUT/$NAME.rpi-imager.json"
  inputs_hash > "$WORK/inputs.hash"; echo "$NAME" > "$WORK/name"
  say "publish: $NAME.img.xz $(du -h "$IMG.xz" | cut -f1) (image $(du -h --apparent-size "$IMG" | cut -f1)) in $((SECONDS - t0)) s"
  ls -l "$IMG.xz" "$IMG.xz.sha256" "$OUT/$NAME.rpi-imager.json" >&2
}

stage_all() {
  local t0=$SECONDS
  if [ -s "$IMG.xz" ] && [ -s "$WORK/inputs.hash" ] && [ "$(cat "$WORK/inputs.hash")" = "$(inputs_hash)" ]; then
    say "image: $NAME.img.xz is up to date (inputs $(inputs_hash))"; return
  fi
  preflight
  rm -f "$WORK/inputs.hash"
  stage_rootfs
  stage_disk
  stage_publish
  say "image: built in $((SECONDS - t0)) s"
}

case "${1:-all}" in
  all) stage_all ;;
  preflight) preflight ;;
  # The build-time settings (/etc/default/textbridge, config.toml, the homeserver unit's
  # drop-in) written into DIR instead of the root filesystem: for tests/test_systemd_units.py.
  settings) R="${2:?usage: build.sh settings DIR}"; mkdir -p "$R/etc/default"; write_settings ;;
  base) stage_base ;;
  wheelhouse) stage_wheelhouse runtime; stage_wheelhouse synapse ;;
  rootfs) stage_rootfs ;;
  disk) stage_disk ;;
  publish) stage_publish ;;
  inputs-hash) inputs_hash ;;
  name) echo "$NAME" ;;
  status) if [ -s "$WORK/inputs.hash" ] && [ "$(cat "$WORK/inputs.hash")" = "$(inputs_hash)" ] && [ -s "$IMG.xz" ]; then echo "up to date: $IMG.xz"; else echo "stale"; exit 1; fi ;;
  *) die "unknown stage ${1:-}" ;;
esac

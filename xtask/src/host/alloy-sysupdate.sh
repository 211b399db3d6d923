#!/bin/bash
# alloy-sysupdate: keeps the alloy sysext on this host current, and the running Alloy with it.
# `cargo xtask butane --sysupdate` writes it to /opt/bin/alloy-sysupdate; alloy-sysupdate.timer
# starts alloy-sysupdate.service, which runs `alloy-sysupdate update`.
#
#   alloy-sysupdate update           make the running system match the link (whoever moved it),
#                                    then install a newer release, unless held
#   alloy-sysupdate hold [VERSION]   run VERSION (default: the one linked) until `unhold`
#   alloy-sysupdate unhold           take new releases again, from the next update
#   alloy-sysupdate status           what is linked, applied, held and rolled back
#
# After a switch to another image Alloy must come up: alloy.service running, not restarted, and
# answering GET /-/ready on its HTTP listener within ALLOY_SYSUPDATE_READY_TIMEOUT seconds (120),
# then still so ALLOY_SYSUPDATE_STEADY seconds later (15). Set either in a drop-in on
# alloy-sysupdate.service (Environment=). A release that does not come up is rolled back.
#
# State, in /var/lib/alloy-sysupdate:
#   applied              the image last applied (merged, and Alloy healthy on it)
#   retry                an image whose switch failed for a reason not its own: tried again
#   refresh-failed       an image systemd-sysext refresh did not merge while the one before it
#                        did: rolled back when that happens again on the next try
#   hold                 the version held
#   rolled-back/VERSION  a release that did not come up here, and why: never installed again by
#                        this script (remove the file to allow it)
set -u

LINK=/etc/extensions/alloy.raw
IMAGES=/opt/extensions/alloy
COMPONENT=alloy
SYSUPDATE=/usr/lib/systemd/systemd-sysupdate
# The transfer file systemd-sysupdate reads (257+ the first, 252 the second; the same text
# unless an operator changed one).
TRANSFERS=(/etc/sysupdate.alloy.d/alloy.transfer /etc/sysupdate.alloy.d/alloy.conf)
MERGED_RELEASE=/usr/lib/extension-release.d/extension-release.alloy
ALLOY=/usr/bin/alloy
SERVICE=alloy.service
UPDATE_SERVICE=alloy-sysupdate.service
ALLOY_USER=alloy
STATE=/var/lib/alloy-sysupdate
LOCK=/run/alloy-sysupdate.lock
DEFAULT_LISTEN=127.0.0.1:12345
READY_TIMEOUT=${ALLOY_SYSUPDATE_READY_TIMEOUT:-120}
STEADY=${ALLOY_SYSUPDATE_STEADY:-15}
# What the last apply, health check and restore said (set -u: defined before any is read).
failure="" why="" back=""

info() { printf '%s\n' "$*"; }

# An error: with the journal's priority "err" when systemd runs us, on stderr otherwise.
error() {
  if [ -n "${INVOCATION_ID:-}" ]; then printf '<3>%s\n' "$*"; else printf '%s\n' "$*" >&2; fi
}

die() {
  error "$*"
  exit 1
}

# The version in an image's path: /opt/extensions/alloy/alloy-1.11.0-amd64.raw -> 1.11.0.
version_of() {
  local name=${1##*/}
  name=${name#"$COMPONENT"-}
  name=${name%.raw}
  printf '%s\n' "${name%-*}"
}

# The architecture in an image's path (amd64).
arch_of() {
  local name=${1%.raw}
  printf '%s\n' "${name##*-}"
}

# Whether $1 can be a version here: what systemd-sysupdate's @v matches, and safe as a file name.
valid_version() {
  case $1 in
    "" | .* | *[!0-9A-Za-z.~^+_-]*) return 1 ;;
  esac
  return 0
}

# The first value of key $2 in section [$1], matching the glob $3 (default: any), of the transfer
# file this systemd reads: 257 and later *.transfer (*.conf only without it), earlier ones *.conf
# alone. Nothing (and 1) when there is none.
transfer_value() {
  local file line value section="" files=("${TRANSFERS[@]}")
  if [ "$(systemd_major)" -lt 257 ] 2>/dev/null; then
    files=()
    for file in "${TRANSFERS[@]}"; do
      [ "${file%.transfer}" = "$file" ] && files+=("$file")
    done
    for file in "${TRANSFERS[@]}"; do
      [ "${file%.transfer}" != "$file" ] && files+=("$file")
    done
  fi
  for file in "${files[@]}"; do
    [ -f "$file" ] || continue
    while IFS= read -r line; do
      line=${line//[[:space:]]/}
      case $line in
        \[*\]) section=$line ;;
        "$2"=*)
          value=${line#"$2"=}
          # shellcheck disable=SC2254 # $3 is a glob
          case $value in
            ${3:-*})
              if [ "$section" = "[$1]" ]; then
                printf '%s\n' "$value"
                return 0
              fi
              ;;
          esac
          ;;
      esac
    done <"$file"
    break
  done
  return 1
}

# The transfer's [Target] MatchPattern: alloy-@v-ARCH.raw, unless an operator narrowed it (to
# alloy-1.@v-amd64.raw, say, to stay on Alloy 1.x).
target_pattern() {
  transfer_value Target MatchPattern '*@v*' ||
    printf '%s\n' "$COMPONENT-@v-$(arch_of "$(linked)").raw"
}

# The image name of the version systemd-sysupdate calls $1: the transfer's pattern with @v
# replaced (the same as Alloy's version unless the pattern was narrowed).
candidate_image() {
  local pattern
  pattern=$(target_pattern)
  printf '%s%s%s\n' "${pattern%%@v*}" "$1" "${pattern#*@v}"
}

# The image the link points at, resolved (nothing when there is no link).
linked() { readlink -f "$LINK" 2>/dev/null; }

applied() { cat "$STATE/applied" 2>/dev/null; }

# Writes state file $1 with $2, whole: a temporary file renamed into place.
record() {
  mkdir -p "$STATE" && printf '%s\n' "$2" >"$STATE/.$1.tmp" && mv -f "$STATE/.$1.tmp" "$STATE/$1"
}

# Points the link at image $1 in one rename (the temporary name is hidden from systemd-sysext).
relink() {
  ln -sfn "$1" "${LINK%/*}/.${LINK##*/}.tmp" && mv -fT "${LINK%/*}/.${LINK##*/}.tmp" "$LINK"
}

merged() { [ -e "$MERGED_RELEASE" ]; }

systemd_major() {
  local version
  version=$(systemctl --version | head -n 1)
  version=${version#systemd }
  printf '%s\n' "${version%%[!0-9]*}"
}

# Merges what the link says. systemd before 255 does not reload units after a refresh
# (EXTENSION_RELOAD_MANAGER=1 is 255's): reload them ourselves there.
merge() {
  systemd-sysext refresh || return 1
  if [ "$(systemd_major)" -lt 255 ]; then
    systemctl daemon-reload || return 1
  fi
}

# alloy.service's "ActiveState SubState MainPID NRestarts Result ExecMainStatus".
service_state() {
  local key value active="" sub="" pid=0 restarts=0 result="" status=""
  while IFS='=' read -r key value; do
    case $key in
      ActiveState) active=$value ;;
      SubState) sub=$value ;;
      MainPID) pid=$value ;;
      NRestarts) restarts=$value ;;
      Result) result=$value ;;
      ExecMainStatus) status=$value ;;
    esac
  done < <(systemctl show -p ActiveState -p SubState -p MainPID -p NRestarts -p Result \
    -p ExecMainStatus "$SERVICE")
  printf '%s %s %s %s %s %s\n' "${active:-unknown}" "${sub:-unknown}" "${pid:-0}" \
    "${restarts:-0}" "${result:-unknown}" "${status:-0}"
}

alloy_running() {
  case $(systemctl show -p ActiveState --value "$SERVICE") in
    active | activating | reloading) return 0 ;;
  esac
  return 1
}

# Host and port of Alloy's HTTP listener, from its command line ($1: NUL-separated words, as
# /proc/PID/cmdline): --server.http.listen-addr, else Alloy's default. A wildcard address is
# asked on loopback.
listen_address() {
  local word take="" address=$DEFAULT_LISTEN host port
  while IFS= read -r -d '' word; do
    if [ -n "$take" ]; then
      address=$word
      take=""
      continue
    fi
    case $word in
      --server.http.listen-addr=*) address=${word#*=} ;;
      --server.http.listen-addr) take=yes ;;
    esac
  done < <(cat "$1" 2>/dev/null)
  host=${address%:*}
  port=${address##*:}
  case $host in
    "" | 0.0.0.0) host=127.0.0.1 ;;
    "[::]" | "[]") host=::1 ;;
    \[*\]) host=${host#\[} host=${host%\]} ;;
  esac
  printf '%s %s\n' "$host" "$port"
}

# The HTTP status of GET /-/ready at host $1, port $2; nothing when nothing answers there. At
# most 5 s and the first 256 bytes of the answer.
ready_status() {
  case $2 in "" | *[!0-9]*) return 0 ;; esac
  # shellcheck disable=SC2016 # the inner bash expands $0 and $1
  timeout 5 bash -c 'trap "" PIPE
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf -v request "GET /-/ready HTTP/1.0\r\nHost: %s\r\n\r\n" "$0"
    printf "%s" "$request" >&3
    read -r -n 256 _ status _ <&3 && printf "%s\n" "$status"' "$1" "$2" 2>/dev/null
}

# Whether Alloy runs and is ready: alloy.service running with the process the restart started,
# never restarted since, answering GET /-/ready (any answer but 503 counts: a listener behind
# TLS cannot say more) within $READY_TIMEOUT seconds and still so $STEADY seconds later. Sets
# $why when not.
healthy() {
  local active sub pid restarts result status first_pid first_restarts host port
  local ready_since="" answer deadline=$((SECONDS + READY_TIMEOUT))
  read -r active sub first_pid first_restarts result status < <(service_state)
  while :; do
    read -r active sub pid restarts result status < <(service_state)
    if [ "$active/$sub" != active/running ] || [ "$pid" != "$first_pid" ] ||
      [ "$restarts" != "$first_restarts" ]; then
      why="alloy.service stopped running: $active/$sub, result $result, exit status $status"
      return 1
    fi
    # Read anew each time: right after the restart the process may still be systemd's fork,
    # not yet Alloy with its flags.
    read -r host port < <(listen_address "/proc/$pid/cmdline")
    answer=$(ready_status "$host" "$port")
    if [ -n "$answer" ] && [ "$answer" != 503 ]; then
      ready_since=${ready_since:-$SECONDS}
      if [ $((SECONDS - ready_since)) -ge "$STEADY" ]; then
        return 0
      fi
    else
      ready_since=""
      if [ "$SECONDS" -ge "$deadline" ]; then
        why="not ready within ${READY_TIMEOUT}s: GET http://$host:$port/-/ready answered ${answer:-nothing}"
        return 1
      fi
    fi
    sleep 1
  done
}

# From Alloy's command line ($1, NUL-separated words): the flags that change what a configuration
# may use (into $VALIDATE_FLAGS) and the configuration, its last plain word (into $CONFIG).
read_alloy_words() {
  local word take=""
  VALIDATE_FLAGS=()
  CONFIG=""
  while IFS= read -r -d '' word; do
    if [ -n "$take" ]; then
      VALIDATE_FLAGS+=("$take=$word")
      take=""
      continue
    fi
    case $word in
      --stability.level=* | --feature.community-components.enabled*) VALIDATE_FLAGS+=("$word") ;;
      --stability.level) take=$word ;;
      -*) ;;
      *) CONFIG=$word ;;
    esac
  done <"$1"
}

# Whether nobody but root can change the configuration at $1 (absolute, links resolved): it (and
# all under it, when a directory) and every directory above it are root's and writable by no one
# else; a sticky directory above it, like /tmp, keeps others from replacing what is root's.
roots_alone() {
  local path=$1 owner mode
  if [ -n "$(find "$path" \( ! -user 0 -o -perm /022 -o -type l \) -print -quit 2>&1)" ]; then
    return 1
  fi
  while [ "$path" != / ]; do
    path=${path%/*}
    path=${path:-/}
    read -r owner mode < <(stat -c '%u %a' -- "$path" 2>/dev/null) || return 1
    [ "$owner" = 0 ] || return 1
    if [ $((8#$mode & 8#022)) != 0 ] && [ $((8#$mode & 8#1000)) = 0 ]; then
      return 1
    fi
  done
}

# Checks the configuration of the Alloy whose command line is in $1 with the binary now merged,
# as the alloy user, without running it. 0: valid; 1: not (why in $why); 2: cannot tell (this
# Alloy has no `validate` command, did not answer, or the check could be steered).
#
# A "not valid" makes the new release one never installed again, so it may only rest on what
# the alloy user cannot steer: the command line is the running Alloy's own memory, which it can
# rewrite, and `alloy validate` runs as the same user, who can signal it. So the flags count
# only with values every Alloy knows, the configuration only where nobody but root can change
# it (between the check of the new release and that of the one running, say), and a check ended
# by a signal says nothing.
validate_config() {
  local output status flag config uid gid
  read_alloy_words "$1"
  if [ -z "$CONFIG" ] || ! command -v setpriv >/dev/null; then
    return 2
  fi
  for flag in "${VALIDATE_FLAGS[@]}"; do
    case $flag in
      --stability.level=generally-available | --stability.level=public-preview | \
        --stability.level=experimental) ;;
      --feature.community-components.enabled | --feature.community-components.enabled=true | \
        --feature.community-components.enabled=false) ;;
      *)
        info "Not checking the configuration with alloy validate: Alloy's command line has a flag value not every Alloy knows"
        return 2
        ;;
    esac
  done
  if [ "${CONFIG#/}" = "$CONFIG" ] || ! config=$(readlink -e -- "$CONFIG") || ! roots_alone "$config"; then
    info "Not checking the configuration with alloy validate: Alloy's command line names one that others than root can change"
    return 2
  fi
  uid=$(id -u "$ALLOY_USER" 2>/dev/null) && gid=$(id -g "$ALLOY_USER" 2>/dev/null) || return 2
  # At most a minute, and the first 4 KiB of what it says.
  output=$(
    timeout 60 setpriv --reuid="$uid" --regid="$gid" --clear-groups \
      "$ALLOY" validate "${VALIDATE_FLAGS[@]}" "$config" 2>&1 9>&- | head -c 4096
    exit "${PIPESTATUS[0]}"
  )
  status=$?
  if [ "$status" = 0 ]; then
    return 0
  fi
  case $output in *'unknown command "validate"'*) return 2 ;; esac
  # Timed out (124), or ended by a signal (128 + its number): no answer.
  if [ "$status" = 124 ] || [ "$status" -gt 128 ]; then
    return 2
  fi
  why="alloy validate $config: $(printf '%s\n' "$output" | head -n 3 | tr '\n' ' ')"
  return 1
}

# Points the link back at image $1 and merges it. Sets $back to what came of it.
restore() {
  if [ -z "$1" ] || [ ! -f "$1" ]; then
    back="there is no earlier image to go back to"
    return 1
  fi
  # The link itself, recorded when it was a plain file: that image was replaced by the link.
  if [ "$1" = "$LINK" ]; then
    back="the image before was $LINK itself, a file that the update replaced: there is no earlier image to go back to"
    return 1
  fi
  relink "$1"
  if merge && merged; then
    back="back on alloy $(version_of "$1")"
    return 0
  fi
  if merged; then
    back="pointed the link back at alloy $(version_of "$1"); systemd-sysext refresh fails, and the previous merge is still in place"
  else
    back="pointed the link back at alloy $(version_of "$1"), but systemd-sysext refresh fails and no alloy extension is merged"
  fi
  return 1
}

# Records that release $1 (image $2) did not come up here, with $3, and removes its image: then
# the image in use stays the newest installed, which systemd-sysupdate never removes. Only an
# image of the images directory: one linked by hand from elsewhere is the operator's.
reject() {
  valid_version "$1" || return 0
  mkdir -p "$STATE/rolled-back" &&
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$3" >"$STATE/rolled-back/$1"
  if [ "$(linked)" != "$2" ] && [ "${2%/*}" = "$(readlink -f "$IMAGES")" ]; then
    rm -f "$2"
  fi
}

never_again() {
  printf 'alloy %s will not be installed again (rm %s/rolled-back/%s to allow it)' "$1" "$STATE" "$1"
}

# Alloy $to failed its health check ($why): back to $previous, restarted and checked again.
roll_back_running() {
  local failed_why=$why started=$1
  if ! restore "$previous"; then
    failure="alloy $to did not come up ($failed_why); $back"
    return 1
  fi
  systemctl reset-failed "$SERVICE" alloy-setup.service 2>/dev/null
  systemctl restart "$SERVICE"
  if healthy; then
    reject "$to" "$target" "did not come up: $failed_why"
    failure="alloy $to did not come up ($failed_why); rolled back to alloy $from in $((SECONDS - started))s, which runs and is ready again; $(never_again "$to")"
    return 1
  fi
  record retry "$target"
  failure="alloy $to did not come up ($failed_why); $back, which does not come up either ($why): the cause is likely this host's, not the release (see journalctl -u $SERVICE); alloy $to is tried again on the next run"
  return 1
}

# Alloy $to rejects the configuration ($why): back to $previous, which never stopped running.
roll_back_unstarted() {
  local failed_why=$why
  if ! restore "$previous"; then
    failure="alloy $to rejects this host's configuration ($failed_why); $back"
    return 1
  fi
  local checked=0
  validate_config "$cmdline" || checked=$?
  if [ "$checked" = 1 ]; then
    failure="alloy $to rejects this host's configuration ($failed_why), and so does alloy $from ($why): fix the configuration; $back, still running; alloy $to is tried again on the next run"
    record retry "$target"
    return 1
  fi
  reject "$to" "$target" "rejects the configuration: $failed_why"
  failure="alloy $to rejects this host's configuration ($failed_why); rolled back to alloy $from, which never stopped running; $(never_again "$to")"
  return 1
}

# Makes the running system match image $1 (what the link points at), coming from image $2 (the
# last applied, or nothing). On failure sets $failure and returns 1.
apply() {
  local target=$1 previous=$2 to from was_running="" cmdline pid started=$SECONDS
  to=$(version_of "$target")
  from=$(version_of "${previous:-none}")
  alloy_running && was_running=yes
  if ! cmdline=$(mktemp); then
    failure="cannot make a temporary file: nothing switched to alloy $to"
    return 1
  fi
  pid=$(systemctl show -p MainPID --value "$SERVICE")
  if [ -n "$was_running" ] && [ "${pid:-0}" != 0 ]; then
    cat "/proc/$pid/cmdline" >"$cmdline" 2>/dev/null
  fi
  info "Switching to alloy $to (from ${previous:+alloy }$from)"
  apply_steps
  local status=$?
  rm -f "$cmdline"
  return $status
}

# apply's steps: merge, check, restart, check again. These and the roll_back_* functions read
# apply's locals ($target, $previous, $to, $from, $cmdline, $was_running): bash scopes locals
# dynamically, so they are the caller's.
apply_steps() {
  if ! merge; then
    if ! restore "$previous"; then
      rm -f "$STATE/refresh-failed"
    elif [ "$(cat "$STATE/refresh-failed" 2>/dev/null)" = "$target" ]; then
      # The second run on which the refresh fails with this image and not without it: the
      # image's own fault (a format this kernel cannot mount, say), not another extension's.
      rm -f "$STATE/refresh-failed"
      reject "$to" "$target" "systemd-sysext refresh failed with it on two runs, and not without it"
      failure="systemd-sysext refresh failed with alloy $to again (see above), and not without it; $back; $(never_again "$to")"
      return 1
    else
      record refresh-failed "$target"
    fi
    record retry "$target"
    failure="systemd-sysext refresh failed while switching to alloy $to (see above); $back; alloy $to is tried again on the next run"
    return 1
  fi
  if ! merged; then
    failure="systemd-sysext did not merge alloy $to: its extension-release does not match this host"
    if restore "$previous"; then
      reject "$to" "$target" "systemd-sysext did not merge it"
      failure="$failure; $back; $(never_again "$to")"
    else
      failure="$failure; $back"
    fi
    return 1
  fi
  local checked=0
  if [ -n "$was_running" ] && [ -s "$cmdline" ]; then
    validate_config "$cmdline" || checked=$?
  fi
  if [ "$checked" = 1 ]; then
    roll_back_unstarted
    return 1
  fi
  if [ -n "$was_running" ]; then
    systemctl try-restart "$SERVICE"
    if ! healthy; then
      roll_back_running "$started"
      return 1
    fi
  fi
  record applied "$target"
  rm -f "$STATE/retry" "$STATE/refresh-failed"
  info "alloy $to is applied${was_running:+, running and ready after $((SECONDS - started))s}"
}

# Asks systemd-sysupdate for a newer release and installs it, unless it was rolled back here.
install_newer() {
  local candidate version
  if ! "$SYSUPDATE" -C "$COMPONENT" list >/dev/null; then
    error "systemd-sysupdate could not read the release index (see above): nothing installed"
    return 1
  fi
  candidate=$("$SYSUPDATE" -C "$COMPONENT" check-new 2>/dev/null) || candidate=""
  if [ -z "$candidate" ]; then
    info "No release newer than alloy $(version_of "$(linked)")"
    return 0
  fi
  version=$(version_of "$(candidate_image "$candidate")")
  if ! valid_version "$candidate" || ! valid_version "$version"; then
    error "systemd-sysupdate offered a version this script cannot use: $candidate"
    return 1
  fi
  # Both channels' indexes are signed with one key: whoever can write the bucket can copy the rc
  # index to the stable folder. systemd orders an rc above its release, so a stable host that
  # took one would stay on it.
  case $version,$(transfer_value Source Path) in
    *-*,*/rc/ | *-*,*/rc) ;;
    *-*,*)
      error "systemd-sysupdate offered alloy $version, a pre-release, from the stable channel: its index is not one publish writes there (the rc channel's, copied?); nothing installed"
      return 1
      ;;
  esac
  if [ -f "$STATE/rolled-back/$version" ]; then
    info "alloy $version was rolled back on this host ($(cat "$STATE/rolled-back/$version")): not installing it; a newer release will be taken (rm $STATE/rolled-back/$version to try it again)"
    return 0
  fi
  info "Installing alloy $version"
  if ! "$SYSUPDATE" -C "$COMPONENT" update "$candidate"; then
    error "systemd-sysupdate could not install alloy $version (see above)"
    return 1
  fi
}

# One alloy-sysupdate at a time (the timer's, and an operator's hold). The lock is root's alone:
# flock needs no write access, so whoever can open it can take it and keep it.
lock() {
  local mask
  mask=$(umask)
  umask 077
  exec 9>"$LOCK" || die "cannot open $LOCK"
  umask "$mask"
  chmod 0600 "$LOCK" || die "cannot make $LOCK root's alone"
  flock -w 3600 9 || die "another alloy-sysupdate has held $LOCK for an hour"
}

# An apply that failed for a reason not its own is tried again, when nothing moved the link since.
take_up_retry() {
  local retry
  [ -f "$STATE/retry" ] || return 0
  retry=$(cat "$STATE/retry")
  rm -f "$STATE/retry"
  if [ "$(linked)" = "$(applied)" ] && [ -f "$retry" ] &&
    [ ! -f "$STATE/rolled-back/$(version_of "$retry")" ]; then
    info "Trying alloy $(version_of "$retry") again: its last switch failed for a reason not its own"
    relink "$retry"
  fi
}

# Whatever moved the link, the running system follows it: applied when it moved since the last
# apply, or when the extension is not merged.
follow_link() {
  local target previous
  target=$(linked)
  previous=$(applied)
  if [ -z "$target" ] || [ ! -f "$target" ]; then
    error "$LINK points at no image (${target:-no link}): nothing to apply"
    return 1
  fi
  if [ "$target" = "$previous" ] && merged; then
    return 0
  fi
  [ "$target" = "$previous" ] && previous=""
  if ! apply "$target" "$previous"; then
    error "$failure"
    return 1
  fi
}

cmd_update() {
  take_up_retry
  follow_link || return 1
  if [ -f "$STATE/hold" ]; then
    info "Held at alloy $(cat "$STATE/hold") (alloy-sysupdate unhold to take new releases): not looking for one"
    return 0
  fi
  install_newer || return 1
  follow_link
}

# Holds $1 (default: the version linked): links and applies it here (health check and rollback
# as for an update), then removes every other image, so that the held one is the newest
# installed, which no systemd-sysupdate run removes (whoever runs it).
cmd_hold() {
  local version=${1:-} current image other
  lock
  current=$(linked)
  [ -n "$current" ] || die "$LINK is missing: nothing to hold"
  version=${version:-$(version_of "$current")}
  valid_version "$version" || die "$version is not a version"
  image="$IMAGES/$COMPONENT-$version-$(arch_of "$current").raw"
  if [ ! -f "$image" ]; then
    die "alloy $version is not installed here; installed: $(cd "$IMAGES" && printf '%s ' "$COMPONENT"-*.raw)"
  fi
  record hold "$version"
  if [ "$image" != "$current" ]; then
    relink "$image"
  fi
  if ! follow_link || [ "$(linked)" != "$image" ]; then
    rm -f "$STATE/hold"
    die "alloy $version was not applied: not held"
  fi
  for other in "$IMAGES/$COMPONENT"-*.raw; do
    if [ "$other" != "$image" ] && [ -f "$other" ]; then
      rm -f "$other" && info "Removed $other"
    fi
  done
  info "Held at alloy $version: $UPDATE_SERVICE installs nothing newer until alloy-sysupdate unhold; it is the only image here, which no systemd-sysupdate run removes"
}

cmd_unhold() {
  lock
  if [ ! -f "$STATE/hold" ]; then
    info "Not held"
    return 0
  fi
  rm -f "$STATE/hold"
  info "Released: the next run of $UPDATE_SERVICE (its timer, or systemctl start $UPDATE_SERVICE) installs the newest release"
}

cmd_status() {
  local name
  info "linked:      $(linked)"
  info "applied:     $(applied)"
  info "held at:     $(cat "$STATE/hold" 2>/dev/null)"
  info "to retry:    $(cat "$STATE/retry" 2>/dev/null)"
  for name in "$STATE"/rolled-back/*; do
    [ -f "$name" ] && info "rolled back: ${name##*/} $(cat "$name")"
  done
  return 0
}

main() {
  case ${1:-} in
    update | hold | unhold) [ "$(id -u)" = 0 ] || die "alloy-sysupdate $1 must run as root" ;;
  esac
  case $READY_TIMEOUT,$STEADY in
    *[!0-9,]* | ,* | *,)
      die "ALLOY_SYSUPDATE_READY_TIMEOUT ($READY_TIMEOUT) and ALLOY_SYSUPDATE_STEADY ($STEADY) must be whole seconds"
      ;;
  esac
  case ${1:-} in
    update) lock && cmd_update ;;
    hold) cmd_hold "${2:-}" ;;
    unhold) cmd_unhold ;;
    status) cmd_status ;;
    *)
      error "usage: alloy-sysupdate update | hold [VERSION] | unhold | status"
      return 2
      ;;
  esac
}

# Sourced (by the tests), only the functions are defined.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi

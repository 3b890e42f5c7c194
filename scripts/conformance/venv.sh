# Sourced by the conformance scripts. create_venv DIR: a Python venv in DIR with an upgraded
# pip (the caller installs its packages), using the system python3. Debian's python3 lacks
# ensurepip until python3-venv is installed, which is then done once.
create_venv() {
  local venv="$1" python=/usr/bin/python3
  [ -x "$python" ] || python=python3
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    if command -v apt-get >/dev/null; then
      local sudo_cmd=""
      [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
      $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
    fi
    "$python" -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
}

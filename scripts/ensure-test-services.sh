#!/usr/bin/env bash
# Installs the system packages the test suite starts for real: a PostgreSQL server (Postgres warehouse
# and Celery metadata DB), Redis (Celery broker, shared rate budget), docker-compose (validates
# docker-compose.yaml; no Docker engine is needed) and Debian's Chromium + ChromeDriver (the UI's
# browser test; no browser is downloaded at run time).
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need: ${missing[*]}. Install them (sudo apt-get install -y ${missing[*]}) and rerun." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/bin/sh
# Batchline's container entry point: runs the given command (`celery -A workers worker ...`,
# `batchline metrics ...`), first wiring it to what the compose profiles run:
#
# - `emulator`: the SDK goes to the emulator. An explicit ANTHROPIC_BASE_URL always wins.
# - `ha`: Redis is reached through the sentinels (REDIS_SENTINELS, "host:port,..."), with
#   REDIS_PASSWORD for the servers and, unless set, for the sentinels too. An explicit
#   Sentinel BATCHLINE_REDIS_URL (sentinel://...) always wins.
#
# A service's name resolves only while its container exists, so the profile alone decides.
set -eu

if [ -z "${ANTHROPIC_BASE_URL:-}" ] && [ -n "${BATCHLINE_EMULATOR_URL:-}" ]; then
  emulator_host=$(printf '%s' "$BATCHLINE_EMULATOR_URL" | sed -E 's#^[a-zA-Z]+://([^/:]+).*$#\1#')
  if getent hosts "$emulator_host" >/dev/null 2>&1; then
    export ANTHROPIC_BASE_URL="$BATCHLINE_EMULATOR_URL"
    # The emulator accepts any non-empty key; a real key is never needed (nor sent) here.
    export ANTHROPIC_API_KEY="${BATCHLINE_EMULATOR_KEY:-sk-local-emulator-key}"
    echo "batchline: emulator profile is on; the API is $ANTHROPIC_BASE_URL" >&2
  fi
fi

case "${BATCHLINE_REDIS_URL:-}" in
  sentinel://*) ;;
  *)
    if [ -n "${REDIS_SENTINELS:-}" ] && [ -n "${REDIS_PASSWORD:-}" ]; then
      first_sentinel=${REDIS_SENTINELS%%,*}
      if getent hosts "${first_sentinel%:*}" >/dev/null 2>&1; then
        # sentinel://:PASSWORD@host1:26379;sentinel://:PASSWORD@host2:26379;.../0, the form
        # kombu and Celery take; the password is the Redis servers' (letters and digits).
        sentinel_url=""
        for sentinel in $(printf '%s' "$REDIS_SENTINELS" | tr ',' ' '); do
          sentinel_url="${sentinel_url:+$sentinel_url;}sentinel://:$REDIS_PASSWORD@$sentinel"
        done
        export BATCHLINE_REDIS_URL="$sentinel_url/0"
        export BATCHLINE_REDIS_SENTINEL_PASSWORD="${BATCHLINE_REDIS_SENTINEL_PASSWORD:-$REDIS_PASSWORD}"
        echo "batchline: ha profile is on; Redis through the sentinels $REDIS_SENTINELS" >&2
      fi
    fi
    ;;
esac

exec "$@"

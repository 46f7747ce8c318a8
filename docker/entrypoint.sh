#!/bin/sh
# Batchline's container entry point: runs the given command (`celery -A workers worker ...`,
# `batchline metrics ...`), first pointing the SDK at the emulator when the compose profile
# `emulator` runs it. The emulator's service name resolves only while its container exists,
# so the profile alone decides; an explicit ANTHROPIC_BASE_URL always wins.
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

exec "$@"

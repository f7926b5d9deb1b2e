#!/bin/sh
# Registers the engine's namespace and the search attributes its workflows set (see
# workflows/search-attributes.ts). Safe to run again: what exists is left as it is.
set -eu

: "${TEMPORAL_ADDRESS:?the Temporal frontend, host:port}"
NAMESPACE="${TEMPORAL_NAMESPACE:-vtpm}"
RETENTION="${VTPM_NAMESPACE_RETENTION:-720h}"

attempt=0
until temporal operator cluster health; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "Temporal at $TEMPORAL_ADDRESS is not healthy after $attempt attempts" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $NAMESPACE exists"
else
  temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
  echo "namespace $NAMESPACE created (retention $RETENTION)"
fi

existing="$(temporal operator search-attribute list --namespace "$NAMESPACE")"
for name in VtpmInstance VtpmProject VtpmHost VtpmOperation VtpmLifecycleState VtpmVersion; do
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type Keyword
    echo "search attribute $name created"
  fi
done

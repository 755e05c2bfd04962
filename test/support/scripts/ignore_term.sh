#!/bin/sh
# Ignores SIGTERM, says it is ready, and waits: only SIGKILL ends it.
trap '' TERM
echo ready
while :; do sleep 1; done

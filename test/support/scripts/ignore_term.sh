#!/bin/sh
# Ignores SIGTERM, says it is ready, and waits: only SIGKILL ends it. Its child sleeps long,
# so that a snapshot of the group stays true (no sleep comes and goes).
trap '' TERM
echo ready
while :; do sleep 1000; done

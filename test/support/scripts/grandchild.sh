#!/bin/sh
# Starts a grandchild in the same process group, prints its pid, and waits for it.
sleep 1000 &
echo "$!"
wait

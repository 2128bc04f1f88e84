"""The edge-fleet simulator: a process (like KWOK) that registers simulated edge nodes from
hardware profiles, heartbeats them, plays the kubelet for the pods bound to them and offers
faults through a small HTTP control API on loopback."""

"""The EdgeRollout decision: one pure, level-triggered function from the world to a status.

`decide(world)` reads what the controller observed (spec, previous status, the model's
revision and variants, the fleet's nodes, what each node actually serves, a fresh round of
measurements if one was due, a person's request) and returns the complete next status and
the revision every node must run. It reads no clock and does no I/O, so the same world
always yields the same decision: a restarted operator continues exactly where the status
says it was, and calling decide again with its own output changes nothing.

The life of a rollout:

- First rollout (no stable revision yet): nothing to compare against, so every assigned
  node switches at once and the revision becomes stable when each node is ready or has
  timed out (no waves, no analysis).
- A new revision with a stable one: the waves are planned (status.waves, also what
  `slmops plan` shows); wave by wave nodes switch in batches of maxUnavailable, a node not
  ready within nodeTimeoutSeconds is Skipped and reported, then analysis rounds run every
  intervalSeconds (after initialDelaySeconds) until `count` rounds pass, a limit is broken,
  or a person intervenes. After the last wave the new revision becomes stable (Healthy).
- A skipped node stays Skipped (status.skippedCount) until it is seen ready on the
  revision it should serve: the canary while the rollout is in flight, the new stable
  after promotion, the old stable after a rollback (draft.hold_skipped, settle_returned).
  Which variants a wave measures when nodes are lost: analyzing's docstring.
- Abort (a broken limit, or `slmops abort`): with rollback.automatic every node the rollout
  touched goes back to stable in one step, no waves, no analysis (RolledBack); without it
  the rollout holds as it is (Degraded) for a person to `slmops abort` or `slmops retry`.
- A newer model revision during a rollout supersedes it: the new revision starts from wave
  0 and every other node returns to stable.

Where each part lives:

- world: the inputs (World, NodeServing) and the output (Decision).
- validation: the spec checks (validate_spec, also run by admission).
- decision: decide() itself, the order of its steps.
- draft: the status being computed and each node's assignment.
- target: which revision to roll out (start, supersede, cancel).
- planning: how a rollout begins (its waves; `slmops plan` via preview_plan).
- switching: nodes switching in batches, ready or skipped after their timeout.
- analyzing: a wave's analysis rounds against its limits.
- pausing: pauses by a person, spec.paused, a wave or analysis; resuming.
- progress: wave after wave until the canary is stable; the progress deadline.
- actions: a person's requests, each applied once.
- rollback: abort and the one-step rollback.
- queries: the analysis queries rendered for a wave and variant.
- measuring: the controller's round (plan_round, measurement_from).
- status: conditions, desired serving and the assembled status.
"""

from __future__ import annotations

from slmops.domain.rollout.actions import ACTIONS
from slmops.domain.rollout.analyzing import MEASUREMENTS_PER_METRIC
from slmops.domain.rollout.decision import decide
from slmops.domain.rollout.draft import SWITCHING_POLL_SECONDS, WAITING_POLL_SECONDS
from slmops.domain.rollout.measuring import PlannedQuery, measurement_from, plan_round
from slmops.domain.rollout.planning import preview_plan
from slmops.domain.rollout.target import target_revision
from slmops.domain.rollout.validation import InvalidSpecError, validate_spec
from slmops.domain.rollout.world import Decision, Event, NodeServing, World

__all__ = [
    "ACTIONS",
    "MEASUREMENTS_PER_METRIC",
    "SWITCHING_POLL_SECONDS",
    "WAITING_POLL_SECONDS",
    "Decision",
    "Event",
    "InvalidSpecError",
    "NodeServing",
    "PlannedQuery",
    "World",
    "decide",
    "measurement_from",
    "plan_round",
    "preview_plan",
    "target_revision",
    "validate_spec",
]

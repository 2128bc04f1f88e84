-- Argo CD health of an slmops.io EdgeRollout (Argo Rollouts semantics).
-- Order matters: a status the operator has not recomputed for the current spec says nothing
-- yet; an abort outranks a pause; only a Ready rollout is Healthy.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the rollout"
  return hs
end

if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message ~= "" and stalled.message or (stalled.reason or "Stalled")
  return hs
end

if status.phase == "Degraded" or status.phase == "RolledBack" then
  hs.status = "Degraded"
  if status.abort ~= nil and status.abort.message ~= nil and status.abort.message ~= "" then
    hs.message = status.phase .. ": " .. status.abort.message
  else
    hs.message = message(status, status.phase)
  end
  return hs
end

if status.phase == "Paused" or (obj.spec ~= nil and obj.spec.paused == true) then
  hs.status = "Suspended"
  hs.message = message(status, "Paused")
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(status, "Every fleet node serves the stable revision")
  return hs
end

hs.status = "Progressing"
hs.message = message(status, status.phase or "Progressing")
return hs

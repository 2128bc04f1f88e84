-- Argo CD health of an slmops.io SLMModel. A model has no pause: it is Progressing while its
-- variants build, Healthy once Ready, Degraded when Stalled or Failed.
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

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the model"
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

local ready = condition(status, "Ready")
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = (ready ~= nil and ready.message ~= "") and ready.message or "Failed"
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Revision " .. tostring(status.revision) .. " is built and qualified"
  return hs
end

hs.status = "Progressing"
hs.message = (ready ~= nil and ready.message ~= "") and ready.message or (status.phase or "Pending")
return hs

"""The tuner worker: the loop runs by itself (`clicktune tuner run`).

trigger    count unreleased sessions; queue a task at N sessions and a minimum interval
lock       a lease in OpenSearch: one worker runs tasks, a standby takes over on expiry
stages     the real work of each task stage (train, reindex, A/B, promote, clean up)
runner     one task, stage by stage, each transition stored before its work starts
scheduler  APScheduler with a persistent job store: the trigger job and the task job
"""

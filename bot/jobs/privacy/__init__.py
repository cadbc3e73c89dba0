"""Privacy (issue 19): the retention sweep (KF2V_RETENTION_DAYS) and forgetting a member (/kf2v-forget-me)."""

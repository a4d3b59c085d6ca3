"""What aejax writes and reads: `files` (atomic writes, strict JSON, JSON lines), `checkpoint`,
`params_file` (params with their manifest), `runs` (run folders and their records), `writers`
(per-epoch metrics: JSON lines, TensorBoard)."""

"""Grading runs and reporting them: finding runs, grading each with the engine (mlebench_hpc.grading),
grading_report.json, summary.csv/.md, the leaderboard row, report.html, upstream's aggregation, cost."""

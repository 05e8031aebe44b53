"""Upstream MLE-bench's report keys, written out rather than imported from the code under test:
a test using them fails if our reports drift from upstream's."""

# CompetitionReport.to_dict(), in upstream's order.
UPSTREAM_REPORT_FIELDS = [
    "competition_id",
    "score",
    "gold_threshold",
    "silver_threshold",
    "bronze_threshold",
    "median_threshold",
    "any_medal",
    "gold_medal",
    "silver_medal",
    "bronze_medal",
    "above_median",
    "submission_exists",
    "valid_submission",
    "is_lower_better",
    "created_at",
    "submission_path",
]
# Ours, after upstream's: which grader, where the thresholds came from, the run and its isolation.
EXTRA_REPORT_FIELDS = [
    "grading_backend",
    "grading_backend_version",
    "thresholds_source",
    "run_dir",
    "seed",
    "error",
    "isolation",
    "submission_sha256",
    "leaderboard_rank",
    "leaderboard_share_beaten",
    "leaderboard_teams",
    "data_dir",
    "recorded_data_dir",
    "agent_id",
    "cost",
]
REPORT_FIELDS = UPSTREAM_REPORT_FIELDS + EXTRA_REPORT_FIELDS
# The run-group report: upstream's keys, then ours.
GROUP_KEYS = [
    "total_runs",
    "total_runs_with_submissions",
    "total_valid_submissions",
    "total_medals",
    "total_gold_medals",
    "total_silver_medals",
    "total_bronze_medals",
    "total_above_median",
    "competition_reports",
    "created_at",
    "grading_backend",
    "grading_backend_version",
    "superseded_runs",
    "cost",
]

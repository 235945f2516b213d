"""Scoring a submission: reading it (submission, keyindex), the metrics and their intervals
(metrics, bootstrap, scores), the report and its files (report, report_md, plots) and the
leaderboard. The CLI is eval/score.py."""

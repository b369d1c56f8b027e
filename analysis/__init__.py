"""Reports, plots and Parquet trace / event-log analysis."""

"""The run's plumbing below the algorithm: the run folder (runfolder), the start of a run and a study's jobs
(launch), progress, threads, the data sources' files (sources) and one seed's record (record)."""

"""Side programs: the speed benchmark (bench, CPU or GPU), a policy as one ONNX file (export); the report's parts
(runs, stats, findings, figures, typeset)."""

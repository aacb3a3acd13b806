"""Side programs: the speed benchmark (bench, on a CPU or a GPU), a policy as one ONNX/TorchScript file (export) and an
.onnx policy in an env loop without torch (onnx_policy), the report's parts (runs, stats, findings, figures, typeset)."""

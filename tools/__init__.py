"""Side programs: the speed benchmark (bench, CPU or GPU), a policy as one ONNX/TorchScript file (export), an .onnx
policy in an env loop without torch (onnx_policy); the report's parts (runs, stats, findings, figures, typeset)."""

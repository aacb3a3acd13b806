"""Side programs: the speed benchmark (bench), a GPU's end-to-end check (gpu_check), a policy as one ONNX/TorchScript
file (export) and an .onnx policy in an env loop without torch (onnx_policy), the report's typesetter (typeset)."""

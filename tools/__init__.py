"""Side programs: the speed benchmark (bench), a policy as one ONNX/TorchScript file (export), the report's
typesetter (typeset)."""

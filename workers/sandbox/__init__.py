"""Local fakes of APNs, FCM HTTP v1 and Huawei Push Kit that tests, demos and benchmarks use.

Start it with `push-server sandbox` (see `workers.sandbox.server`) or from Python with
`workers.sandbox.control.SandboxProcess`.
"""

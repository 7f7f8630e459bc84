"""KServe v2 / Triton-protocol model server for `.erm` models (`edgerun serve`, `python -m edgerun serve`).

Modules: protos/ (generated gRPC code), grpc_service and rest (thin front ends), handlers (plain
operations), validate and datatypes (request decoding), repository, config and model (model
repository, version policy, hot reload), batcher (dynamic batching), worker and supervisor
(processes), metrics and stats, auth and tls, control (load/unload across workers), cli.
"""

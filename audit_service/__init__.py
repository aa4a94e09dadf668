"""The litestar audit service: live scoring, durable batch jobs, Prometheus metrics."""

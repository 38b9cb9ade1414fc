# The routing service (python -m qis_lib.serve), as docker-compose.yml's `router` service runs it.
# Not built on our development machines, which have no Docker: written from Docker's docs and
# checked only by tests/test_serve.py parsing the compose file.
FROM python:3.11-slim
WORKDIR /app
# torch only exports the embedder to ONNX once (below); the CPU build, pinned as in requirements.txt.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml requirements.txt README.md ./
COPY qis_lib ./qis_lib
# The package with the Qdrant client and the service, every version pinned by requirements.txt.
RUN pip install --no-cache-dir -c requirements.txt ".[qdrant,serve]"
# Export the model to ONNX at build time, so a container starts without doing it.
ENV QIS_CACHE_DIR=/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN python -c "from qis_lib.embedders import get_embedder; get_embedder('onnx').encode(['warm up'])" \
    && useradd --create-home router && chown -R router /cache
EXPOSE 8080
USER router
CMD ["python", "-m", "qis_lib.serve", "--host", "0.0.0.0", "--port", "8080", "--store", "memory://"]

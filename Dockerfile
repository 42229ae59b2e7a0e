# One image for both services: the precompute extra is only needed by the one-shot `precompute` service, but a
# single image keeps the compose file simple. Torch wheels come from the index pip is configured with.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY server server
COPY render render
COPY precompute precompute
COPY store store
COPY templates templates
COPY static static
RUN pip install --no-cache-dir -c constraints.txt '.[precompute]'
EXPOSE 8000
ENTRYPOINT ["atlascope"]

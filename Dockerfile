# mlpulse worker image. Build: docker build -t mlpulse .
FROM python:3.11-slim
WORKDIR /opt/mlpulse
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY schemas ./schemas
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --home /var/lib/mlpulse mlpulse \
    && mkdir -p /var/lib/mlpulse && chown mlpulse /var/lib/mlpulse
USER mlpulse
ENV MLPULSE_DATA_DIR=/var/lib/mlpulse MLPULSE_WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["mlpulse"]
CMD ["worker"]

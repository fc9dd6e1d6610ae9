# One image for web, workers and beat (docker-compose reuses it with different commands).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt package.json ./
RUN pip install --no-cache-dir -r requirements.txt && npm install --no-audit --no-fund --omit=dev
COPY . .
RUN DJANGO_SECRET_KEY=build python manage.py collectstatic --noinput
EXPOSE 8000
# Threaded workers (config/gunicorn.py): streamed answers must not hold a whole worker each.
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"]

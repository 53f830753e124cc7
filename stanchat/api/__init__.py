"""An OpenAI-compatible server for stanchat (`stanchat api`), and the engines behind it.

    stanchat api --model tiny --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"messages": [...]}'

Layout: `config` (the server's settings, each declared once), `body` (a request body read within
its size and time limits, parsed within a nesting limit), `protocol` (an OpenAI request body -> a
`ChatRequest`, and the response objects), `media` (a `video_url` / `image_url` part -> a checked
local file and its content hash), `uploads` (uploaded files owned by their request, upload folders
by their process), `scope` (one request's place, work and cleanup), `faults` (whose fault an
exception is: the status and the log line), `encoder` (decode + tower + STAN + projector, with a
bounded cache of encoded videos keyed by content hash), `prompt` (the chat-template prompt as token
ids), `engines` (who runs the LLM: `transformers` batched in this process, or `vllm`), `app` (the
FastAPI routes) and `server` (builds the app and serves it). Importing this package imports
nothing heavy; torch, FastAPI and the engines load when a server is built.
"""

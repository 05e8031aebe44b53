"""The grading server: its HTTP app, socket deadlines, token, record of requests in flight, and the
memory-bounded validation workers."""

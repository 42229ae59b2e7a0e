"""One module per page kind. Each builds its page as a plain dict with stable keys, validated against its model in
``server.twins``; the JSON twin sends that dict and the HTML template renders the very same one, so they never drift.
"""

"""Web views: faust Blueprints registered by app.py, so view modules never import the app."""

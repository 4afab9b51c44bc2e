"""Thin HTTP routes, one module per resource: validate, call one service, return a Public model."""

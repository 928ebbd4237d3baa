"""Keras models: build from the plan, train, evaluate, gate, register, export."""

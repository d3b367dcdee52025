"""Results for people and for CI tools: plots and the HTML page, KCIDB documents, the fault
table. May import ``analysis`` and the layers below it.
"""

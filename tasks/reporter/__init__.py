"""The reporter's way back: a receipt for a filed report, its follow-up and a message thread.

The public pages (flows/web/) import only tasks.reporter.receipts; staff use `remedy reporter`.
"""

"""CRM <-> email-marketing connector daemon (Dynamics 365 <-> Salesforce Marketing Cloud)."""

__version__ = "0.1.0"

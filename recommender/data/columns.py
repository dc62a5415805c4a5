"""Canonical column names of the bank extracts, in one place."""

CUSTOMER_ID = "customer_id"
PRODUCT_ID = "product_id"
SNAPSHOT_DATE = "snapshot_date"

AGE = "age"
BIRTH_DATE = "birth_date"
INCOME = "income"
MARITAL_STATUS = "marital_status"
DEPENDANTS = "dependants"
TENURE_MONTHS = "tenure_months"
SEGMENT = "segment"
RISK_GRADE = "risk_grade"
RISK_ASSESSED_ON = "risk_assessed_on"
RESIDENCY = "residency"
CONSENT_PROFILING = "consent_profiling"
VULNERABLE = "vulnerable"
OPEN_COMPLAINT = "open_complaint"
GENDER = "gender"
NATIONALITY = "nationality"

LIFE_STAGE = "life_stage"
SCORE = "score"
RANK = "rank"
SOURCE = "source"

MARITAL_STATUSES = ("single", "married", "divorced", "widowed", "unknown")
RESIDENCIES = ("resident", "non_resident")
RISK_GRADES = ("C1", "C2", "C3", "C4", "C5")
PRODUCT_RISK_GRADES = ("R1", "R2", "R3", "R4", "R5")

# Protected attributes: kept for fairness audits only, never a model feature or rule input.
PROTECTED = (GENDER, NATIONALITY)
